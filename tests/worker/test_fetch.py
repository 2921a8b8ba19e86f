"""Input fetch without a network: private URLs refused before any connect, data URIs decoded
within the limits, unsupported schemes refused."""

from __future__ import annotations

import base64

import pytest

from core.input_errors import DownloadFailed, ForbiddenAddress, TooLarge
from tests.support.images import noise_png
from worker.fetch import FetchLimits, fetch_input

LIMITS = FetchLimits(max_bytes=1000, timeout_s=2, max_redirects=2, allowed_networks=())


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
