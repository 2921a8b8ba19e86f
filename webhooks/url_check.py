"""The SSRF rules of input images, applied to webhook URLs: at submit, and again per attempt
(DNS answers can change between the two)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from core.input_errors import DownloadFailed, ForbiddenAddress
from worker.address_guard import IPAddress, IPNetwork, check_address, resolve_checked

FIELD = "fal_webhook"


class WebhookUrlRefused(Exception):
    """The URL may never be delivered to (malformed, or a forbidden address)."""


@dataclass(frozen=True)
class Target:
    parts: SplitResult
    host: str
    port: int


def parse(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise WebhookUrlRefused(f"{FIELD} must be an http(s) URL")
    if not parts.hostname:
        raise WebhookUrlRefused(f"{FIELD} has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookUrlRefused(f"{FIELD} has an invalid port") from exc
    return Target(parts, parts.hostname, port)


def check_at_submit(url: str, allowed: Sequence[IPNetwork]) -> None:
    """Refuse a URL that is malformed or resolves to a forbidden address.

    A name that does not resolve now is accepted: it may by the time the request completes,
    and every attempt checks again.
    """
    target = parse(url)
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    try:
        if literal is not None:
            check_address(literal, allowed, field=FIELD)
        else:
            resolve_checked(target.host, target.port, allowed, field=FIELD)
    except ForbiddenAddress as exc:
        raise WebhookUrlRefused(exc.message) from exc
    except DownloadFailed:
        pass


def resolve_for_delivery(target: Target, allowed: Sequence[IPNetwork]) -> IPAddress:
    """The checked address to connect to; raises WebhookUrlRefused or DownloadFailed."""
    try:
        return resolve_checked(target.host, target.port, allowed, field=FIELD)[0]
    except ForbiddenAddress as exc:
        raise WebhookUrlRefused(exc.message) from exc
