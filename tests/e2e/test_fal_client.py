"""The official Python client (fal-client) against the service, pointed at it as
README.md describes: its module globals patched to the service's base URL."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.client_helpers import APP
from tests.support.image_checks import assert_result_image
from tests.support.image_server import ImageServer
from tests.support.images import noise_png

fal_client = pytest.importorskip("fal_client")
fal_module = pytest.importorskip("fal_client.client")

pytestmark = pytest.mark.usefixtures("workers")

NO_CROP = {"flag_do_crop": False}


def _point_at(base: str, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", base + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", base + "/run/")
    monkeypatch.setattr(fal_module, "REST_URL", base)
    monkeypatch.setattr(fal_module, "CDN_URL", base)
    return fal_client.SyncClient(key="anything:anything")


@pytest.fixture
def client(api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    yield _point_at(api, monkeypatch)


def test_subscribe_with_logs(client: object, image_server: ImageServer) -> None:
    updates: list[object] = []
    output = client.subscribe(  # type: ignore[attr-defined]
        APP,
        arguments={"image_url": image_server.url("noise.png"), **NO_CROP, "smile": 0.4},
        with_logs=True,
        on_queue_update=updates.append,
    )
    assert_result_image(output)
    assert any(isinstance(u, fal_client.InProgress) and u.logs for u in updates)


def test_submit_status_result(client: object, image_server: ImageServer) -> None:
    handle = client.submit(  # type: ignore[attr-defined]
        APP, arguments={"image_url": image_server.url("noise.png"), **NO_CROP, "output_format": "png"}
    )
    assert isinstance(handle.status(), fal_client.Queued | fal_client.InProgress | fal_client.Completed)
    for _ in handle.iter_events(with_logs=True, interval=0.1):
        pass
    final = handle.status(with_logs=True)
    assert isinstance(final, fal_client.Completed) and final.error is None and final.logs
    assert_result_image(handle.get(), "image/png")
    # The module-level calls by id rebuild the owner/alias URLs instead of following the handle's.
    by_id = client.result(APP, handle.request_id)  # type: ignore[attr-defined]
    assert by_id["image"]["url"] == handle.get()["image"]["url"]


def test_cancel_of_a_waiting_request(
    idle_api: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = _point_at(idle_api[0], monkeypatch)
    handle = idle.submit(APP, arguments={"image_url": "https://example.com/a.png"})  # type: ignore[attr-defined]
    assert isinstance(handle.status(), fal_client.Queued)
    handle.cancel()
    final = handle.status()
    assert isinstance(final, fal_client.Completed) and final.error
    with pytest.raises(fal_client.client.FalClientHTTPError) as cancelled:
        handle.get()
    assert cancelled.value.status_code == 499


def test_run_and_errors(client: object, image_server: ImageServer) -> None:
    output = client.run(APP, arguments={"image_url": image_server.url("noise.png"), **NO_CROP})  # type: ignore[attr-defined]
    assert_result_image(output)

    handle = client.submit(APP, arguments={"image_url": image_server.url("not-an-image.txt")})  # type: ignore[attr-defined]
    with pytest.raises(fal_client.client.FalClientHTTPError) as failed:
        handle.get()
    assert failed.value.status_code == 422
    assert isinstance(failed.value.message, list) and failed.value.message[0]["loc"] == ["body", "image_url"]
    status = handle.status()
    assert isinstance(status, fal_client.Completed) and status.error
    with pytest.raises(fal_client.client.FalClientHTTPError) as refused:
        handle.cancel()
    assert refused.value.status_code == 400

    with pytest.raises(fal_client.client.FalClientHTTPError) as invalid:
        client.submit(APP, arguments={"image_url": "https://example.com/a.png", "smile": 9})  # type: ignore[attr-defined]
    assert invalid.value.status_code == 422
    assert invalid.value.message[0]["loc"] == ["body", "smile"]


def test_upload_file_then_use_it_as_image_url(client: object, tmp_path: Path) -> None:
    path = tmp_path / "portrait.png"
    path.write_bytes(noise_png(seed=5))
    # Only fal_v3 (token + /files/upload): a fallback would hide a broken default path.
    url = client.upload_file(path, fallback_repository=[])  # type: ignore[attr-defined]
    assert httpx.get(url, timeout=30, follow_redirects=True).content == path.read_bytes()
    output = client.subscribe(APP, arguments={"image_url": url, **NO_CROP})  # type: ignore[attr-defined]
    assert_result_image(output)


def test_upload_bytes_and_image(client: object) -> None:
    png = noise_png(seed=6)
    via_cdn = client.upload(png, "image/png", "cdn.png", fallback_repository=[])  # type: ignore[attr-defined]
    via_storage = client.upload(png, "image/png", repository="fal", fallback_repository=[])  # type: ignore[attr-defined]
    for url in (via_cdn, via_storage):
        assert httpx.get(url, timeout=30, follow_redirects=True).content == png
    image = Image.open(io.BytesIO(png))
    url = client.upload_image(image, format="png")  # type: ignore[attr-defined]
    output = client.run(APP, arguments={"image_url": url, **NO_CROP, "output_format": "png"})  # type: ignore[attr-defined]
    assert_result_image(output, "image/png")

    with pytest.raises(fal_client.client.FalClientHTTPError) as refused:
        client.upload(b"hello", "text/plain", repository="fal", fallback_repository=[])  # type: ignore[attr-defined]
    assert refused.value.status_code == 415


def test_multipart_upload(client: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real threshold is 100 MiB; lowering it drives the same code with a two-part file.
    monkeypatch.setattr(fal_module, "MULTIPART_THRESHOLD", 1024 * 1024)
    monkeypatch.setattr(fal_module, "MULTIPART_CHUNK_SIZE", 5 * 1024 * 1024)
    data = os.urandom(5 * 1024 * 1024 + 1234)
    url = client.upload(data, "application/octet-stream", "big.bin")  # type: ignore[attr-defined]
    assert httpx.get(url, timeout=30, follow_redirects=True).content == data
