"""SSRF address checks: which addresses a URL from a client may reach.

Every address a host name resolves to is checked (an attacker controls DNS answers);
netguard.pinned then connects to a checked address, so a second lookup cannot swap in another.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from core.input_errors import DownloadFailed, ForbiddenAddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_global excludes private, loopback, link-local, CGNAT, reserved and unspecified ranges.
    return address.is_global and not address.is_multicast


def check_address(address: IPAddress, allowed: Sequence[IPNetwork], *, field: str = "image_url") -> None:
    if is_public(address) or any(address in network for network in allowed):
        return
    raise ForbiddenAddress(f"{field} resolves to a non-public address ({address}), which is not allowed")


def resolve_checked(
    host: str, port: int, allowed: Sequence[IPNetwork], *, field: str = "image_url"
) -> list[IPAddress]:
    """All addresses of `host`, each checked; raises if any of them is forbidden.

    `field` names the URL in error messages (input images and webhooks share these rules)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadFailed(f"{field} host {host!r} could not be resolved") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        # Strip an IPv6 zone id ("fe80::1%eth0"): ipaddress would refuse it.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DownloadFailed(f"{field} host {host!r} has no address")
    for address in addresses:
        check_address(address, allowed, field=field)
    return addresses
