"""Fetch a request's input image: an http(s) URL, a data URI, one of our own stored objects, or
the reference to the input the API stored at submit (storage.inputs)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx

from core.config import Settings
from core.input_errors import DownloadFailed, TooLarge
from storage.inputs import StoredInputMissing, is_ref, read_input
from storage.s3 import ObjectStore, ObjectTooLarge
from worker.address_guard import IPNetwork, resolve_checked

USER_AGENT = "portrait-queue/0.1 (+image fetch)"
_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout_s: float
    max_redirects: int
    allowed_networks: tuple[IPNetwork, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchLimits:
        return cls(
            max_bytes=settings.max_input_bytes,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.fetch_max_redirects,
            allowed_networks=tuple(settings.allowed_networks),
        )


def fetch_input(url: str, limits: FetchLimits, store: ObjectStore | None = None) -> bytes:
    if is_data_uri(url):
        return decode_data_uri(url, limits.max_bytes).data
    if is_ref(url):
        return _read_stored_input(store, url, limits.max_bytes)
    if store is not None and (key := store.key_from_url(url)) is not None:
        return _read_own_object(store, key, limits.max_bytes)
    return _download(url, limits)


def is_data_uri(url: str) -> bool:
    return url[:5].lower() == "data:"  # schemes are case-insensitive (RFC 3986)


def _too_large(size: int | str, limit: int) -> TooLarge:
    return TooLarge(f"image_url file is too large ({size} bytes; the limit is {limit} bytes)")


@dataclass(frozen=True)
class DataUri:
    data: bytes
    media_type: str  # as the URI's header names it, unchecked; "" when it names none


def decode_data_uri(uri: str, max_bytes: int) -> DataUri:
    """The bytes of a data URI (base64 or percent-encoded). The API decodes with this at submit,
    so that a URI refused here is a 422 there, with the message the worker would report."""
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise DownloadFailed("image_url is a malformed data URI (no comma)")
    # Base64 grows data by 4/3: refuse before decoding anything far beyond the limit.
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise _too_large(len(payload) * 3 // 4, max_bytes)
    if header.endswith(";base64"):
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise DownloadFailed("image_url is a data URI with invalid base64") from exc
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return DataUri(data, header.split(";", 1)[0].strip())


def _read_stored_input(store: ObjectStore | None, ref: str, max_bytes: int) -> bytes:
    if store is None:
        raise DownloadFailed("image_url was stored at submit, and this worker has no object store")
    try:
        return read_input(store, ref, max_bytes=max_bytes)
    except StoredInputMissing as exc:
        # The sweep deletes it with the result; a request run after that has nothing to edit.
        raise DownloadFailed(
            "image_url was stored at submit and no longer exists (expired or deleted); submit it again"
        ) from exc
    except ObjectTooLarge as exc:
        raise _too_large(str(exc).split()[0], max_bytes) from exc
    except Exception as exc:
        # The object store's own message may name internal hosts: the client gets the kind only.
        raise DownloadFailed(
            f"image_url was stored at submit and could not be read ({type(exc).__name__})"
        ) from exc


def _read_own_object(store: ObjectStore, key: str, max_bytes: int) -> bytes:
    try:
        data, _ = store.get(key, max_bytes=max_bytes)
    except ObjectTooLarge as exc:
        raise _too_large(str(exc).split()[0], max_bytes) from exc
    except Exception as exc:
        raise DownloadFailed(f"image_url refers to a stored file that could not be read ({key})") from exc
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context httpx would build for each client (certifi's CA bundle, no
    environment overrides), built once per process: loading the CA bundle costs ~30 ms, more
    than everything else a fetch from a nearby server does. A context holds no connections, so
    sharing it across requests (and forks) shares nothing else."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


def _download(url: str, limits: FetchLimits) -> bytes:
    deadline = time.monotonic() + limits.timeout_s
    timeout = httpx.Timeout(limits.timeout_s, connect=min(10.0, limits.timeout_s))
    # A fresh client (and so a fresh connection pool) per fetch: connections are made to checked,
    # pinned addresses, and must never be reused for another URL's host name.
    with httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, verify=_tls_context()
    ) as client:
        for _ in range(limits.max_redirects + 1):
            response_or_next = _get_once(client, url, limits, deadline)
            if isinstance(response_or_next, bytes):
                return response_or_next
            url = response_or_next
    raise DownloadFailed(f"image_url redirected more than {limits.max_redirects} times")


def _get_once(client: httpx.Client, url: str, limits: FetchLimits, deadline: float) -> bytes | str:
    """The body, or the next URL to follow (each hop is checked again by the caller)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise DownloadFailed("image_url must be an http(s) URL, a data URI or an uploaded file URL")
    host = parts.hostname
    if not host:
        raise DownloadFailed("image_url has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DownloadFailed("image_url has an invalid port") from exc
    address = resolve_checked(host, port, limits.allowed_networks)[0]

    # Connect to the checked address; the Host header and TLS name stay those of the URL.
    literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
    host_header = parts.netloc.rsplit("@", 1)[-1]
    request = client.build_request(
        "GET",
        pinned,
        headers={"Host": host_header, "User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"},
        extensions={"sni_hostname": host} if parts.scheme == "https" else {},
    )
    try:
        response = client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"image_url could not be fetched: {_describe(exc)}") from exc
    try:
        if response.status_code in _REDIRECTS and "location" in response.headers:
            return urljoin(url, response.headers["location"])
        if response.status_code >= 400:
            raise DownloadFailed(f"image_url could not be fetched: HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise _too_large(int(declared), limits.max_bytes)
        body = bytearray()
        try:
            for chunk in response.iter_bytes(64 * 1024):
                body.extend(chunk)
                if len(body) > limits.max_bytes:
                    raise _too_large(f"more than {limits.max_bytes}", limits.max_bytes)
                if time.monotonic() > deadline:
                    raise DownloadFailed(f"image_url download took longer than {limits.timeout_s:g} s")
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"image_url could not be fetched: {_describe(exc)}") from exc
        return bytes(body)
    finally:
        response.close()


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    return type(exc).__name__
