"""The service's public API as the command line uses it: upload, submit, status (polled or
streamed), result, cancel, download. Every failure becomes a one-line CliError."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx

from cli.errors import CliError, summarise_detail

DEFAULT_APP = "fal-ai/live-portrait/image"
NAMESPACES = ("workflows", "comfy")


def queue_base(app_id: str) -> str:
    """owner/alias of an endpoint id: where its request URLs live (fal's layout)."""
    parts = [p for p in app_id.strip("/").split("/") if p]
    owner_at = 1 if parts and parts[0] in NAMESPACES else 0
    return "/".join(parts[: owner_at + 2])


class ApiClient:
    def __init__(
        self, base_url: str, key: str | None, app_id: str = DEFAULT_APP, timeout: float = 60
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id.strip("/")
        self._requests = f"{self.base_url}/{queue_base(self.app_id)}/requests"
        headers = {"Authorization": f"Key {key}"} if key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout, trust_env=False)
        # Downloads go to S3 or a CDN: never send them the key.
        self._plain = httpx.Client(timeout=timeout, follow_redirects=True, trust_env=False)

    def close(self) -> None:
        self._http.close()
        self._plain.close()

    # --- calls ----------------------------------------------------------------------------
    def upload(self, path: Path) -> str:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
        ticket = self._call(
            "POST",
            f"{self.base_url}/storage/upload/initiate",
            json={"file_name": path.name, "content_type": content_type},
        ).json()
        self._call("PUT", ticket["upload_url"], content=data, headers={"Content-Type": content_type})
        return str(ticket["file_url"])

    def submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"{self.base_url}/{self.app_id}", json=payload).json())

    def status(self, request_id: str, logs: bool = False) -> dict[str, Any]:
        url = f"{self._requests}/{request_id}/status"
        return dict(self._call("GET", url, params={"logs": "1" if logs else "0"}).json())

    def stream_status(self, request_id: str) -> Iterator[dict[str, Any]]:
        """Status events (new log lines in each) until COMPLETED, from the SSE stream."""
        url = f"{self._requests}/{request_id}/status/stream"
        try:
            with self._http.stream(
                "GET", url, params={"logs": "1"}, timeout=httpx.Timeout(60, read=None)
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    self._raise_for(r)
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        yield json.loads(line[5:])
        except httpx.HTTPError as exc:
            self._raise_transport(exc)

    def result(self, request_id: str) -> dict[str, Any]:
        response = self._call("GET", f"{self._requests}/{request_id}", ok_statuses=range(200, 600))
        if response.status_code == 400:
            raise CliError(f"request {request_id} has not finished yet")
        if response.status_code >= 400:
            self._raise_for(response, prefix=f"request {request_id} failed")
        return dict(response.json())

    def cancel(self, request_id: str) -> str:
        response = self._call("PUT", f"{self._requests}/{request_id}/cancel", ok_statuses=(202, 400))
        return str(response.json().get("status", ""))

    def download(self, url: str, dest: Path) -> int:
        try:
            with self._plain.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise CliError(f"download failed: HTTP {response.status_code} from {url.split('?')[0]}")
                with dest.open("wb") as out:
                    size = 0
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        size += len(chunk)
        except httpx.HTTPError as exc:
            raise CliError(f"download failed: {exc}") from None
        except OSError as exc:
            raise CliError(f"cannot write {dest}: {exc.strerror or exc}") from None
        return size

    # --- errors ---------------------------------------------------------------------------
    def _call(
        self, method: str, url: str, ok_statuses: Any = range(200, 300), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self._raise_transport(exc)
        if response.status_code not in ok_statuses:
            self._raise_for(response)
        return response

    def _raise_transport(self, exc: httpx.HTTPError) -> NoReturn:
        if isinstance(exc, httpx.ConnectError):
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
            hint = "is the service running? see --url / PORTRAIT_QUEUE_URL"
            raise CliError(f"cannot connect to {self.base_url}: {reason} ({hint})") from None
        if isinstance(exc, httpx.TimeoutException):
            raise CliError(f"{self.base_url} did not answer in time") from None
        raise CliError(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _raise_for(response: httpx.Response, prefix: str | None = None) -> NoReturn:
        code = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = summarise_detail(body.get("detail")) if isinstance(body, dict) else response.text[:200]
        if code == 401:
            raise CliError(f"unauthorized (401): {detail}; pass --key or set PORTRAIT_QUEUE_KEY")
        if code == 404:
            raise CliError("not found (404): no such request (a wrong id, or another key's request)")
        if code == 422:
            raise CliError(f"{prefix or 'invalid input'} (422): {detail}")
        if code == 429:
            raise CliError(f"rate limited (429): {detail}")
        raise CliError(f"{prefix or 'the service answered'} ({code}): {detail}")
