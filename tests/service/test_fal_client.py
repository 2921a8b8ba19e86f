"""The official Python client (fal-client) against the service, pointed at it as
README.md describes: its module globals patched to the service's base URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.client_helpers import APP
from tests.service.conftest import ImageServer

fal_client = pytest.importorskip("fal_client")
fal_module = pytest.importorskip("fal_client.client")

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def client(api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", api + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", api + "/run/")
    yield fal_client.SyncClient(key="anything:anything")


def test_subscribe_with_logs(client: object, image_server: ImageServer) -> None:
    updates: list[object] = []
    output = client.subscribe(  # type: ignore[attr-defined]
        APP,
        arguments={"image_url": image_server.url("noise.png"), "flag_do_crop": False, "smile": 0.4},
        with_logs=True,
        on_queue_update=updates.append,
    )
    assert output["image"]["content_type"] == "image/jpeg"
    assert any(isinstance(u, fal_client.InProgress) and u.logs for u in updates)


def test_run_submit_cancel_and_errors(client: object, image_server: ImageServer) -> None:
    output = client.run(  # type: ignore[attr-defined]
        APP, arguments={"image_url": image_server.url("noise.png"), "flag_do_crop": False}
    )
    assert output["image"]["width"] > 0

    handle = client.submit(APP, arguments={"image_url": image_server.url("not-an-image.txt")})  # type: ignore[attr-defined]
    with pytest.raises(fal_client.client.FalClientHTTPError) as failed:
        handle.get()
    assert failed.value.status_code == 422
    status = handle.status()
    assert isinstance(status, fal_client.Completed) and status.error
    with pytest.raises(fal_client.client.FalClientHTTPError) as refused:
        handle.cancel()
    assert refused.value.status_code == 400

    with pytest.raises(fal_client.client.FalClientHTTPError) as invalid:
        client.submit(APP, arguments={"image_url": "https://example.com/a.png", "smile": 9})  # type: ignore[attr-defined]
    assert invalid.value.status_code == 422
