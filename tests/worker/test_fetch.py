"""Pure units: endpoint ids, settings, the SSRF guard, input decoding, image probing, views."""

from __future__ import annotations

import base64
import ipaddress
import uuid
from typing import Any

import pytest

from api.app_ids import AppId
from api.status_view import RequestUrls, status_body
from core import failures
from core.clock import utcnow
from core.config import Settings
from core.input_errors import DownloadFailed, ForbiddenAddress, TooLarge
from core.input_errors import InvalidImageError as NotAnImage
from core.models import Status
from core.requests_table import RequestView
from netguard.addresses import check_address, is_public, resolve_checked
from tests.support.images import huge_png, noise_png
from worker.fetch import FetchLimits, fetch_input
from worker.image_probe import probe_image

LIMITS = FetchLimits(max_bytes=1000, timeout_s=2, max_redirects=2, allowed_networks=())


@pytest.mark.parametrize(
    ("endpoint", "full", "base"),
    [
        ("fal-ai/live-portrait/image", "fal-ai/live-portrait/image", "fal-ai/live-portrait"),
        ("/fal-ai/live-portrait/", "fal-ai/live-portrait", "fal-ai/live-portrait"),
        ("workflows/me/flow/sub", "workflows/me/flow/sub", "workflows/me/flow"),
    ],
)
def test_app_id_paths(endpoint: str, full: str, base: str) -> None:
    app = AppId.parse(endpoint)
    assert (app.full, app.queue_base) == (full, base)


def test_app_id_needs_owner_and_alias() -> None:
    with pytest.raises(ValueError):
        AppId.parse("comfy/only")


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_IDS", "fal-ai/live-portrait/image, me/other")
    monkeypatch.setenv("ALLOWED_PRIVATE_NETWORKS", "127.0.0.0/8,::1/128")
    monkeypatch.setenv("TORCH_THREADS", "")
    monkeypatch.setenv("TASK_SOFT_TIME_LIMIT_S", "60")
    monkeypatch.setenv("TASK_TIME_LIMIT_S", "100")
    settings = Settings()
    assert settings.app_id_list == ["fal-ai/live-portrait/image", "me/other"]
    assert ipaddress.ip_address("127.0.0.5") in settings.allowed_networks[0]
    assert settings.torch_threads is None
    assert settings.visibility_timeout_s > settings.task_time_limit_s


def test_settings_refuse_bad_cidr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_PRIVATE_NETWORKS", "not-a-network")
    with pytest.raises(ValueError):
        Settings()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not is_public(ip)
    with pytest.raises(ForbiddenAddress):
        check_address(ip, [])


def test_allowed_networks_open_the_guard() -> None:
    check_address(ipaddress.ip_address("127.0.0.1"), [ipaddress.ip_network("127.0.0.0/8")])
    assert is_public(ipaddress.ip_address("8.8.8.8"))


def test_every_resolved_address_is_checked() -> None:
    # "localhost" resolves to loopback only; an empty allow-list refuses it before any connect.
    with pytest.raises(ForbiddenAddress):
        resolve_checked("localhost", 80, [])
    with pytest.raises(DownloadFailed):
        resolve_checked("does-not-exist.invalid", 80, [])


def test_private_url_refused_without_connecting() -> None:
    with pytest.raises(ForbiddenAddress):
        fetch_input("http://169.254.169.254/latest/meta-data/", LIMITS)
    with pytest.raises(ForbiddenAddress):
        fetch_input("http://[::1]:9/x.png", LIMITS)


def test_data_uri_decoding_and_limits() -> None:
    png = noise_png(8)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert fetch_input(uri, LIMITS) == png
    assert fetch_input("data:,hello%20world", LIMITS) == b"hello world"
    with pytest.raises(TooLarge):
        fetch_input("data:image/png;base64," + base64.b64encode(b"x" * 2000).decode(), LIMITS)
    with pytest.raises(DownloadFailed):
        fetch_input("data:image/png;base64", LIMITS)


def test_unsupported_scheme() -> None:
    with pytest.raises(DownloadFailed):
        fetch_input("ftp://example.com/x.png", LIMITS)


def test_probe_image() -> None:
    assert probe_image(noise_png(20), max_pixels=1000)[1:] == (20, 20)
    with pytest.raises(NotAnImage):
        probe_image(b"<html>nope</html>", max_pixels=1000)
    with pytest.raises(NotAnImage):
        probe_image(b"", max_pixels=1000)
    with pytest.raises(TooLarge):
        probe_image(noise_png(40), max_pixels=1000)
    # 9 Mpx of zeros compress to a few KB; only the header is read to refuse them.
    with pytest.raises(TooLarge):
        probe_image(huge_png(), max_pixels=4_000_000)


def _row(status: Status, **values: Any) -> RequestView:
    return RequestView(
        id=uuid.uuid4(),
        app_id="fal-ai/live-portrait/image",
        status=status.value,
        priority=0,
        owner_key_id=None,
        queued_at=utcnow(),
        logs=[],
        **values,
    )


def test_status_bodies_carry_the_keys_the_clients_need() -> None:
    urls = RequestUrls.build("http://h:1/", "fal-ai/live-portrait", "abc")
    assert urls.status_url == "http://h:1/fal-ai/live-portrait/requests/abc/status"
    queued = status_body(_row(Status.IN_QUEUE, queue_position=3), urls, logs=None)
    assert queued["queue_position"] == 3
    running = status_body(_row(Status.IN_PROGRESS), urls, logs=None)
    assert "logs" in running and running["logs"] is None
    failure = failures.cancelled()
    done = status_body(
        _row(Status.COMPLETED, error=failure.message, error_type=failure.error_type, metrics={"x": 1}),
        urls,
        logs=[],
    )
    assert done["error_type"] == "client_cancelled" and done["logs"] == [] and done["metrics"] == {"x": 1}


def test_failure_shapes() -> None:
    bad = failures.invalid_input("nope", "image_load_error", value="http://x")
    assert bad.status_code == 422
    assert bad.body["detail"][0]["loc"] == ["body", "image_url"]
    assert failures.weights_missing("model weights not installed").body["error_type"] == "weights_error"
