"""The object store against the real S3 server: keys, URLs, and recognising our own URLs."""

from __future__ import annotations

import httpx
import pytest

from core.config import Settings
from core.input_errors import TooLarge
from storage.s3 import ObjectStore, ObjectTooLarge
from worker.fetch import FetchLimits, fetch_input


@pytest.fixture(scope="module")
def store(service_env: dict[str, str]) -> ObjectStore:
    return ObjectStore(Settings())


def test_put_get_and_presigned_url(store: ObjectStore) -> None:
    store.put("outputs/test/a.png", b"\x89PNG data", "image/png")
    assert store.get("outputs/test/a.png", max_bytes=100) == (b"\x89PNG data", "image/png")
    with pytest.raises(ObjectTooLarge):
        store.get("outputs/test/a.png", max_bytes=3)
    url = store.url_for("outputs/test/a.png")
    assert httpx.get(url).content == b"\x89PNG data"
    assert store.key_from_url(url) == "outputs/test/a.png"
    assert store.key_from_url("https://example.com/portrait-queue/outputs/test/a.png") is None


def test_own_objects_are_read_through_the_s3_api(store: ObjectStore) -> None:
    store.put("uploads/x/in.bin", b"12345", "application/octet-stream")
    url = store.url_for("uploads/x/in.bin")
    # No private network is allowed, yet our own S3 (on loopback) is readable.
    limits = FetchLimits(max_bytes=10, timeout_s=5, max_redirects=0, allowed_networks=())
    assert fetch_input(url, limits, store) == b"12345"
    with pytest.raises(TooLarge):
        fetch_input(url, FetchLimits(max_bytes=2, timeout_s=5, max_redirects=0, allowed_networks=()), store)


def test_public_base_urls(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_PUBLIC_BASE_URL", "https://cdn.example.com/files/")
    public = ObjectStore(Settings())
    assert public.url_for("outputs/r/a.jpg") == "https://cdn.example.com/files/outputs/r/a.jpg"
    assert public.key_from_url("https://cdn.example.com/files/outputs/r/a.jpg") == "outputs/r/a.jpg"


def test_time_limits_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_SOFT_TIME_LIMIT_S", "100")
    monkeypatch.setenv("TASK_TIME_LIMIT_S", "100")
    with pytest.raises(ValueError):
        Settings()
