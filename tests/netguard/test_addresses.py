"""The SSRF address guard: every non-public address refused unless allowed, every resolved
address checked."""

from __future__ import annotations

import ipaddress

import pytest

from core.input_errors import DownloadFailed, ForbiddenAddress
from netguard.addresses import check_address, is_public, resolve_checked


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
