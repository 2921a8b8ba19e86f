"""Submit options fal's clients send as headers and query parameters."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Header, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from core.clock import utcnow
from core.config import get_settings
from core.models import Priority
from webhooks.url_check import WebhookUrlRefused, check_at_submit


@dataclass(frozen=True)
class SubmitOptions:
    """A submit's headers and query parameters, checked."""

    priority: int
    start_deadline: datetime | None
    webhook_url: str | None
    retention_s: int | None
    idempotency_key: str | None = None
    max_queue_length: int | None = None
    no_retry: bool = False
    store_io: bool = True


def _header_error(header: str, message: str, value: str) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail=[{"loc": ["header", header], "msg": message, "type": "value_error", "input": value}],
    )


async def queue_priority(
    x_fal_queue_priority: Annotated[
        str | None, Header(description="normal (default) or low; low runs after every normal request.")
    ] = None,
) -> int:
    if x_fal_queue_priority is None or not x_fal_queue_priority.strip():
        return Priority.NORMAL.value
    try:
        return Priority[x_fal_queue_priority.strip().upper()].value
    except KeyError:
        raise _header_error(
            "x-fal-queue-priority", "must be 'normal' or 'low'", x_fal_queue_priority
        ) from None


async def start_deadline(
    x_fal_request_timeout: Annotated[
        str | None, Header(description="Seconds the request may wait to start; then it fails with a 504.")
    ] = None,
) -> datetime | None:
    if x_fal_request_timeout is None or not x_fal_request_timeout.strip():
        return None
    try:
        seconds = float(x_fal_request_timeout)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 10**7:
        raise _header_error(
            "x-fal-request-timeout", "must be a positive number of seconds", x_fal_request_timeout
        )
    return utcnow() + timedelta(seconds=seconds)


# Like image_url's cap: it is stored in the row, which stays small whatever the caller sends.
WEBHOOK_URL_MAX_CHARS = 2048


async def webhook_url(
    fal_webhook: Annotated[
        str | None, Query(description="URL to POST the result to when the request completes.")
    ] = None,
) -> str | None:
    if fal_webhook is None or not fal_webhook.strip():
        return None
    url = fal_webhook.strip()
    message = None
    if len(url) > WEBHOOK_URL_MAX_CHARS:
        message = f"is too long ({len(url)} characters; at most {WEBHOOK_URL_MAX_CHARS})"
        url = url[:64] + "…"  # the error need not echo the whole of it
    elif not url.lower().startswith(("http://", "https://")):
        message = "must be an http(s) URL"
    else:
        # The image URLs' SSRF rules; each delivery attempt checks again (DNS can change).
        try:
            # Resolves the host name: off the event loop.
            await run_in_threadpool(check_at_submit, url, get_settings().allowed_networks)
        except WebhookUrlRefused as exc:
            message = str(exc)
    if message is not None:
        raise HTTPException(
            status_code=422,
            detail=[{"loc": ["query", "fal_webhook"], "msg": message, "type": "value_error", "input": url}],
        )
    return url


_MIN_RETENTION_S = 1


async def object_retention(
    x_fal_object_lifecycle_preference: Annotated[
        str | None,
        Header(
            description='JSON {"expiration_duration_seconds": N}: keep the result and its files N '
            "seconds after the request ends (at most RESULT_RETENTION_MAX_S)."
        ),
    ] = None,
) -> int | None:
    """The per-request result lifetime fal's JS client sends (`storageSettings`); None: default."""
    raw = x_fal_object_lifecycle_preference
    if raw is None or not raw.strip():
        return None
    try:
        seconds = json.loads(raw).get("expiration_duration_seconds")
    except (ValueError, AttributeError):
        seconds = "invalid"
    if seconds is None:
        return None  # other preferences only (initial_acl): nothing about lifetime
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise _header_error(
            "x-fal-object-lifecycle-preference",
            'must be JSON like {"expiration_duration_seconds": 3600}',
            raw,
        )
    return int(min(max(seconds, _MIN_RETENTION_S), get_settings().result_retention_max_s))


# The IETF draft's Idempotency-Key is a Structured Field string ("…"); the bare token many
# clients send is accepted too.
IDEMPOTENCY_KEY_MAX_CHARS = 255


async def idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Up to 255 characters: a repeat within IDEMPOTENCY_TTL_S answers with the "
            "request the first one created (Idempotent-Replayed: true)."
        ),
    ] = None,
) -> str | None:
    if idempotency_key is None:
        return None
    value = idempotency_key.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not 1 <= len(value) <= IDEMPOTENCY_KEY_MAX_CHARS:
        shown = idempotency_key if len(idempotency_key) <= 64 else idempotency_key[:64] + "…"
        raise _header_error(
            "idempotency-key",
            f"must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters (got {len(value)})",
            shown,
        )
    return value


async def max_queue_length(
    fal_max_queue_length: Annotated[
        str | None,
        Query(description="Refuse the submit (429) when more than this many requests are waiting."),
    ] = None,
) -> int | None:
    if fal_max_queue_length is None or not fal_max_queue_length.strip():
        return None
    try:
        limit = int(fal_max_queue_length)
    except ValueError:
        limit = -1
    if limit < 0:
        raise HTTPException(
            status_code=422,
            detail=[
                {
                    "loc": ["query", "fal_max_queue_length"],
                    "msg": "must be a whole number, 0 or more",
                    "type": "value_error",
                    "input": fal_max_queue_length,
                }
            ],
        )
    return limit


# fal's X-Fal-No-Retry values; X-Fal-Store-IO is on unless it says otherwise.
_YES = frozenset({"1", "true", "yes"})
_NO = frozenset({"0", "false", "no"})


def _flag(header: str, raw: str | None, *, default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise _header_error(header, "must be 1, true, yes, 0, false or no", raw)


async def no_retry(
    x_fal_no_retry: Annotated[
        str | None,
        Header(description="1|true|yes: a request whose worker is lost fails (503) instead of rerunning."),
    ] = None,
) -> bool:
    return _flag("x-fal-no-retry", x_fal_no_retry, default=False)


async def store_io(
    x_fal_store_io: Annotated[
        str | None, Header(description="0: once the request ends, its input and logs are deleted.")
    ] = None,
) -> bool:
    return _flag("x-fal-store-io", x_fal_store_io, default=True)
