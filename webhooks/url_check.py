"""The SSRF rules of input images, applied to webhook URLs at submit.

Each delivery attempt checks again (DNS answers can change between the two): webhooks.sender
connects through netguard.pinned, which resolves and checks the host every time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from core.input_errors import DownloadFailed, ForbiddenAddress, InvalidUrl
from netguard import pinned
from netguard.addresses import IPNetwork, check_address, resolve_checked

FIELD = "fal_webhook"


class WebhookUrlRefused(Exception):
    """The URL may never be delivered to (malformed, or a forbidden address)."""


def check_at_submit(url: str, allowed: Sequence[IPNetwork]) -> None:
    """Refuse a URL that is malformed or resolves to a forbidden address.

    A name that does not resolve now is accepted: it may by the time the request completes,
    and every attempt checks again.
    """
    try:
        target = pinned.parse(url, field=FIELD)
    except InvalidUrl as exc:
        raise WebhookUrlRefused(exc.message) from exc
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
