"""fal's storage API and the client proxy on the running API, request by request as the official
clients send them (fal-protocol.md §5, §6.2), plus the limits, signatures and the expiry sweep."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.fal_targets import local_target
from core.config import Settings
from storage.s3 import ObjectStore
from storage.upload_sweep import sweep_once
from tests.support.images import heic, noise_png
from tests.support.limits import UPLOAD_MAX_BYTES
from worker.image_probe import probe_image

PART = 5 * 1024 * 1024  # S3's smallest part but the last


def _initiate(api: str, path: str, body: dict[str, str]) -> dict[str, str]:
    response = httpx.post(f"{api}{path}?storage_type=fal-cdn-v3", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_initiate_then_put_gives_a_readable_file_url(api: str) -> None:
    png = noise_png()
    urls = _initiate(
        api, "/storage/upload/initiate", {"file_name": "a b/../x.png", "content_type": "image/png"}
    )
    put = httpx.put(urls["upload_url"], content=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert put.status_code == 200, put.text
    fetched = httpx.get(urls["file_url"], timeout=30)
    assert fetched.content == png and fetched.headers["content-type"] == "image/png"
    assert "/uploads/" in urls["file_url"] and urls["file_url"].split("?")[0].endswith("/x.png")


def test_upload_url_signature_and_limits(api: str) -> None:
    urls = _initiate(api, "/storage/upload/initiate", {"content_type": "image/jpeg"})
    tampered = urls["upload_url"].replace("image%2Fjpeg", "image%2Fpng")
    assert httpx.put(tampered, content=b"x", timeout=30).status_code == 403
    too_big = httpx.put(urls["upload_url"], content=b"\0" * (UPLOAD_MAX_BYTES + 1), timeout=60)
    assert too_big.status_code == 413
    refused = httpx.post(
        f"{api}/storage/upload/initiate",
        json={"file_name": "a.txt", "content_type": "text/plain"},
        timeout=30,
    )
    assert refused.status_code == 415


def test_js_multipart_sequence(api: str) -> None:
    """initiate-multipart, PUT <path>/<n><query> answering {partNumber, etag}, POST <path>/complete."""
    data = os.urandom(PART + 1000)
    urls = _initiate(api, "/storage/upload/initiate-multipart", {"file_name": "big.bin", "content_type": ""})
    parsed = httpx.URL(urls["upload_url"])
    base, query = f"{api}{parsed.path}", parsed.query.decode()
    parts = []
    for number, chunk in enumerate((data[:PART], data[PART:]), start=1):
        response = httpx.put(f"{base}/{number}?{query}", content=chunk, timeout=60)
        assert response.status_code == 200, response.text
        parts.append(response.json())
        assert parts[-1]["partNumber"] == number and parts[-1]["etag"]
    done = httpx.post(f"{base}/complete?{query}", json={"parts": parts}, timeout=60)
    assert done.status_code == 200, done.text
    assert httpx.get(urls["file_url"], timeout=30).content == data


def test_cdn_token_upload_and_service_file_url(api: str) -> None:
    token = httpx.post(f"{api}/storage/auth/token?storage_type=fal-cdn-v3", json={}, timeout=30).json()
    assert token["token_type"] == "Bearer" and token["base_url"] == api
    assert datetime.fromisoformat(token["expires_at"]) > datetime.now(UTC)
    auth = {"Authorization": f"Bearer {token['token']}"}
    png = noise_png(seed=3)
    single = httpx.post(
        f"{api}/files/upload",
        content=png,
        headers={**auth, "Content-Type": "image/png", "X-Fal-File-Name": "n.png"},
        timeout=30,
    )
    assert single.status_code == 200, single.text
    assert httpx.get(single.json()["access_url"], timeout=30).content == png

    # fal-client's multipart: parts answer the ETag header; access_url is the file's URL.
    started = httpx.post(
        f"{api}/files/upload/multipart",
        headers={**auth, "Content-Type": "image/png", "X-Fal-File-Name": "m.png"},
        timeout=30,
    ).json()
    access_url, upload_id = started["access_url"], started["uploadId"]
    part = httpx.put(f"{access_url}/multipart/{upload_id}/1", content=png, headers=auth, timeout=30)
    assert part.status_code == 200 and part.headers["etag"]
    done = httpx.post(
        f"{access_url}/multipart/{upload_id}/complete",
        json={"parts": [{"partNumber": 1, "etag": part.headers["etag"]}]},
        headers=auth,
        timeout=30,
    )
    assert done.status_code == 200, done.text
    served = httpx.get(access_url, timeout=30, follow_redirects=True)
    assert served.content == png
    store = ObjectStore(Settings())
    assert store.key_from_url(access_url) == access_url.split("/files/", 1)[1]
    assert httpx.get(f"{api}/files/uploads/not-an-upload", timeout=30).status_code == 404


def test_heic_from_a_phone_uploads_as_heic(api: str) -> None:
    photo = heic(Image.open(io.BytesIO(noise_png(64))), orientation=6)
    urls = _initiate(
        api, "/storage/upload/initiate", {"file_name": "IMG_0001.HEIC", "content_type": "image/heic"}
    )
    put = httpx.put(urls["upload_url"], content=photo, headers={"Content-Type": "image/heic"}, timeout=30)
    assert put.status_code == 200, put.text
    fetched = httpx.get(urls["file_url"], timeout=30)
    assert fetched.content == photo and fetched.headers["content-type"] == "image/heic"
    # What the worker will make of the file: a HEIC it can read.
    assert probe_image(fetched.content, max_pixels=10_000) == ("HEIC", 64, 64)

    # The CDN route, unnamed: the content type names the file.
    single = httpx.post(
        f"{api}/files/upload", content=photo, headers={"Content-Type": "image/heif"}, timeout=30
    )
    assert single.status_code == 200, single.text
    access_url = single.json()["access_url"]
    assert access_url.split("?")[0].endswith("/upload.heif")
    served = httpx.get(access_url, timeout=30, follow_redirects=True)
    assert served.content == photo and served.headers["content-type"] == "image/heif"


def test_sweep_deletes_expired_uploads(api: str) -> None:
    urls = _initiate(api, "/storage/upload/initiate", {"file_name": "old.png", "content_type": "image/png"})
    assert httpx.put(urls["upload_url"], content=b"old", timeout=30).status_code == 200
    store = ObjectStore(Settings())
    key = store.key_from_url(urls["file_url"])
    assert key is not None
    store.put("outputs/keep/a.png", b"output", "image/png")
    assert sweep_once(store, retention_s=3600).deleted == 0
    later = datetime.now(UTC) + timedelta(hours=2)
    assert sweep_once(store, retention_s=3600, now=later).deleted >= 1
    assert httpx.get(urls["file_url"], timeout=30).status_code == 404
    assert store.get("outputs/keep/a.png", max_bytes=100)[0] == b"output"  # outputs are not uploads


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("https://queue.fal.run/fal-ai/live-portrait/image", "/fal-ai/live-portrait/image"),
        (
            "https://queue.fal.run/fal-ai/live-portrait/requests/x/status?logs=1",
            "/fal-ai/live-portrait/requests/x/status",
        ),
        ("https://fal.run/fal-ai/live-portrait/image", "/run/fal-ai/live-portrait/image"),
        ("https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3", "/storage/upload/initiate"),
        ("https://rest.alpha.fal.ai/storage/auth/token", "/storage/auth/token"),
        ("https://v3.fal.media/files/upload", "/files/upload"),
        ("https://example.com/fal-ai/live-portrait/image", None),
        ("http://queue.fal.run/fal-ai/live-portrait/image", None),
        ("https://queue.fal.run/storage/upload/initiate", None),
        ("https://queue.fal.run/fal-ai/../healthz", None),
        ("https://rest.fal.ai/tokens/", None),
        ("https://fal.run.evil.com/fal-ai/live-portrait/image", None),
    ],
)
def test_proxy_target_allow_list(target: str, expected: str | None) -> None:
    mapped = local_target(target)
    assert (mapped.path if mapped else None) == expected


def test_proxy_refuses_unknown_targets(api: str) -> None:
    proxy = f"{api}/api/fal/proxy"
    assert httpx.post(proxy, json={}, timeout=30).status_code == 400
    unknown = httpx.get(proxy, headers={"x-fal-target-url": "https://example.com/a/b"}, timeout=30)
    assert unknown.status_code == 400
    token = httpx.post(
        proxy, json={}, headers={"x-fal-target-url": "https://rest.fal.ai/storage/auth/token"}, timeout=30
    )
    assert token.status_code == 200 and token.json()["token_type"] == "Bearer"


@pytest.fixture
def keyed_app(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in this process with API_KEYS set (no lifespan: no reconciler or sweep threads)."""
    from api.app import create_app
    from tests.support.settings_reset import reset_cached_settings

    monkeypatch.setenv("AUTH_MODE", "keys")
    monkeypatch.setenv("API_KEYS", "id:secret,other:key")
    monkeypatch.setenv("PROXY_ALLOW_UNAUTHENTICATED", "false")
    reset_cached_settings()
    yield TestClient(create_app())
    monkeypatch.undo()
    reset_cached_settings()


def test_storage_auth_with_api_keys(keyed_app: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.settings_reset import reset_cached_settings

    token_path = "/storage/auth/token?storage_type=fal-cdn-v3"
    assert keyed_app.post(token_path, json={}).status_code == 401
    token = keyed_app.post(token_path, json={}, headers={"Authorization": "Key id:secret"}).json()["token"]
    upload = {"Content-Type": "image/png", "X-Fal-File-Name": "k.png"}
    for authorization, expected in (
        (f"Bearer {token}", 200),
        ("Key other:key", 200),
        (f"Bearer {token[:-2]}xx", 401),
        (None, 401),
    ):
        headers = {**upload, **({"Authorization": authorization} if authorization else {})}
        assert keyed_app.post("/files/upload", content=b"png", headers=headers).status_code == expected

    proxied = {"x-fal-target-url": "https://rest.fal.ai/storage/auth/token"}
    assert keyed_app.post("/api/fal/proxy", json={}, headers=proxied).status_code == 401
    with_key = {**proxied, "Authorization": "Key id:secret"}
    assert keyed_app.post("/api/fal/proxy", json={}, headers=with_key).status_code == 200
    # fal's allowUnauthorizedRequests: the proxy itself supplies the service's first key.
    monkeypatch.setenv("PROXY_ALLOW_UNAUTHENTICATED", "true")
    reset_cached_settings()
    assert keyed_app.post("/api/fal/proxy", json={}, headers=proxied).status_code == 200


def test_presigned_urls_of_the_presign_endpoint_are_ours(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Clients reach S3 under another name than the service: those URLs must still be read via S3.
    outside = service_env["S3_ENDPOINT_URL"].replace("127.0.0.1", "localhost")
    monkeypatch.setenv("S3_PRESIGN_ENDPOINT_URL", outside)
    store = ObjectStore(Settings())
    url = store.url_for("uploads/00000000-0000-4000-8000-000000000000/p.png")
    assert url.startswith(outside)
    assert store.key_from_url(url) == "uploads/00000000-0000-4000-8000-000000000000/p.png"
