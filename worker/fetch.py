"""Fetch a request's input image: an http(s) URL, a data URI, one of our own stored objects, or
the reference to the input the API stored at submit (storage.inputs)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from core.config import Settings
from core.input_errors import DownloadFailed, TooLarge
from netguard import pinned
from netguard.addresses import IPNetwork
from storage.inputs import StoredInputMissing, decode_data_uri, is_data_uri, is_ref, read_input
from storage.s3 import ObjectStore, ObjectTooLarge

USER_AGENT = "portrait-queue/0.1 (+image fetch)"


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
        raise TooLarge.file(str(exc).split()[0], max_bytes) from exc
    except Exception as exc:
        # The object store's own message may name internal hosts: the client gets the kind only.
        raise DownloadFailed(
            f"image_url was stored at submit and could not be read ({type(exc).__name__})"
        ) from exc


def _read_own_object(store: ObjectStore, key: str, max_bytes: int) -> bytes:
    try:
        data, _ = store.get(key, max_bytes=max_bytes)
    except ObjectTooLarge as exc:
        raise TooLarge.file(str(exc).split()[0], max_bytes) from exc
    except Exception as exc:
        raise DownloadFailed(f"image_url refers to a stored file that could not be read ({key})") from exc
    if len(data) > max_bytes:
        raise TooLarge.file(len(data), max_bytes)
    return data


def _download(url: str, limits: FetchLimits) -> bytes:
    deadline = time.monotonic() + limits.timeout_s
    timeout = httpx.Timeout(limits.timeout_s, connect=min(10.0, limits.timeout_s))
    with pinned.client(timeout) as client:
        try:
            response = pinned.send(
                client,
                "GET",
                url,
                allowed=limits.allowed_networks,
                field="image_url",
                headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"},
                max_redirects=limits.max_redirects,
                schemes="an http(s) URL, a data URI or an uploaded file URL",
            )
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"image_url could not be fetched: {_describe(exc)}") from exc
        try:
            return _read_body(response, limits, deadline)
        finally:
            response.close()


def _read_body(response: httpx.Response, limits: FetchLimits, deadline: float) -> bytes:
    if pinned.is_redirect(response):
        raise DownloadFailed(f"image_url redirected more than {limits.max_redirects} times")
    if response.status_code >= 400:
        raise DownloadFailed(f"image_url could not be fetched: HTTP {response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise TooLarge.file(int(declared), limits.max_bytes)
    body = bytearray()
    try:
        for chunk in response.iter_bytes(64 * 1024):
            body.extend(chunk)
            if len(body) > limits.max_bytes:
                raise TooLarge.file(f"more than {limits.max_bytes}", limits.max_bytes)
            if time.monotonic() > deadline:
                raise DownloadFailed(f"image_url download took longer than {limits.timeout_s:g} s")
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"image_url could not be fetched: {_describe(exc)}") from exc
    return bytes(body)


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    return type(exc).__name__
