"""What the API does with requests, kept apart from HTTP: create and publish, look up, cancel."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi.concurrency import run_in_threadpool

from api.app_ids import AppId
from api.auth import ANONYMOUS, Caller
from api.request_options import SubmitOptions
from core import failures, idempotency
from core.clock import utcnow
from core.config import Settings, get_settings
from core.db_async import DatabaseUnavailable, connection
from core.failures import Failure
from core.input_errors import InputRejected
from core.requests_table import (
    CancelOutcome,
    LimitExceeded,
    RequestView,
    api_statements,
    cancel,
    key_limits,
    queue_length,
)
from core.requests_table.queue_length import QueueLengthExceeded
from queueing.publish import background, unit_of_work
from storage.inputs import INLINE_MAX_CHARS, DataUri, decode_data_uri, delete_input, is_data_uri, put_input
from storage.s3 import get_store

log = logging.getLogger(__name__)


def parse_request_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class SubmitRefused(Exception):
    """Refused before anything was stored: an input that cannot run (a data URI that does not
    decode, or decodes too large: the 422 the worker would have reported), or an object store
    that cannot take a large input now (503)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


# The IETF httpapi draft's answer header on a repeated Idempotency-Key.
REPLAYED_HEADER = "Idempotent-Replayed"
# How the endpoint was called: part of a key's fingerprint, so that a queue submit and a /run/
# with one key and body are two different requests (and the second one a 422).
QUEUE = "queue"
RUN = "run"
# Rounds of "the key was taken concurrently, but its entry is gone when read": only a request
# deleted in between (row retention) or an entry expiring in between; never more than a couple.
_CLAIM_ROUNDS = 3


@dataclass(frozen=True)
class Submitted:
    view: RequestView
    # True when an earlier submit with the same Idempotency-Key made this request.
    replayed: bool = False


@dataclass(frozen=True)
class _Key:
    owner: str
    key: str
    fingerprint: bytes


class _KeyTaken(Exception):
    """Raised inside the submitting transaction to roll the new row back: a concurrent submit
    committed the same key first."""


async def submit(
    app: AppId,
    payload: dict[str, Any],
    options: SubmitOptions,
    caller: Caller = ANONYMOUS,
    *,
    mode: str = QUEUE,
) -> Submitted:
    """Create and publish a request, or, for an Idempotency-Key this caller already used within
    IDEMPOTENCY_TTL_S, answer with the request it made (nothing stored, nothing published)."""
    if options.idempotency_key is None:
        return await _create(app, payload, options, caller, None)
    key = await _key_of(app, payload, options.idempotency_key, caller, mode)
    for _ in range(_CLAIM_ROUNDS):
        earlier = await _earlier(key)
        if earlier is not None:
            return earlier
        try:
            return await _create(app, payload, options, caller, key)
        except _KeyTaken:
            continue
        except (LimitExceeded, QueueLengthExceeded):
            # A concurrent submit with this key may have committed while this one waited on
            # the key limit's lock (or counted the queue): that one's answer beats a 429.
            earlier = await _earlier(key)
            if earlier is not None:
                return earlier
            raise
    raise DatabaseUnavailable("the Idempotency-Key's entry kept changing; retry")


async def _key_of(app: AppId, payload: dict[str, Any], key: str, caller: Caller, mode: str) -> _Key:
    owner = caller.key_id if caller.key_id is not None else idempotency.ANONYMOUS_OWNER
    image_url = payload.get("image_url")
    if isinstance(image_url, str) and len(image_url) > INLINE_MAX_CHARS:
        # Hashing megabytes of data URI belongs off the event loop.
        digest = await run_in_threadpool(idempotency.fingerprint, app.full, mode, payload)
    else:
        digest = idempotency.fingerprint(app.full, mode, payload)
    return _Key(owner, key, digest)


async def _earlier(key: _Key) -> Submitted | None:
    """The live entry's request as a replay; None when there is no entry (or its request is
    gone); a 422 when the entry was made with another body."""
    async with connection() as conn:
        entry = await idempotency.lookup(conn, key.owner, key.key, utcnow())
    if entry is None:
        return None
    if entry.fingerprint != key.fingerprint:
        raise SubmitRefused(_reused(key.key))
    view = await api_statements.fetch(entry.request_id, with_logs=False)
    return None if view is None else Submitted(view, replayed=True)


def _reused(key: str) -> Failure:
    message = (
        "This Idempotency-Key was already used with a different request body or endpoint;"
        " use a new key for a new request"
    )
    detail = {
        "loc": ["header", "idempotency-key"],
        "msg": message,
        "type": "idempotency_key_reused",
        "input": key if len(key) <= 64 else key[:64] + "…",
    }
    return Failure(message, "idempotency_key_reused", 422, {"detail": [detail]})


async def _create(
    app: AppId, payload: dict[str, Any], options: SubmitOptions, caller: Caller, key: _Key | None
) -> Submitted:
    # The row is committed before anything is published or answered: an accepted request is
    # never lost, at worst published later by the reconciler.
    settings = get_settings()
    request_id = uuid.uuid4()
    # A large data URI goes to the bucket first, so that a row never names a missing object.
    stored = await _store_large_input(request_id, payload, settings)
    now = utcnow()
    values = {
        "request_id": request_id,
        "app_id": app.full,
        "payload": {**payload, "image_url": stored} if stored else payload,
        "priority": options.priority,
        "queued_at": now,
        "webhook_url": options.webhook_url,
        "start_deadline": options.start_deadline,
        "owner_key_id": caller.key_id,
        "retention_s": options.retention_s,
        "no_retry": options.no_retry,
        "store_io": options.store_io,
    }
    limited_key = caller.key_id if key_limits.enabled(settings) else None
    try:
        async with connection() as conn:
            if limited_key is not None or options.max_queue_length is not None or key is not None:
                async with conn.transaction():
                    if options.max_queue_length is not None:
                        await queue_length.check(conn, app.full, options.max_queue_length)
                    if limited_key is not None:
                        await key_limits.check(conn, limited_key, settings)
                    view = await api_statements.insert(conn, **values)
                    if key is not None:
                        claimed = await idempotency.claim(
                            conn,
                            owner=key.owner,
                            key=key.key,
                            fingerprint=key.fingerprint,
                            request_id=request_id,
                            now=now,
                            ttl_s=settings.idempotency_ttl_s,
                        )
                        if not claimed:
                            raise _KeyTaken
            else:
                view = await api_statements.insert(conn, **values)
    except Exception:
        # No row (a key limit, a key taken concurrently, PostgreSQL away): no sweep would ever
        # find the object. Not on cancellation, where the commit may have happened: a row
        # without its object is worse than an object without a row.
        if stored:
            await run_in_threadpool(_forget_input, request_id, stored)
        raise
    background.enqueue(view.id, options.priority)
    return Submitted(await api_statements.settle_position(view))


async def _store_large_input(
    request_id: uuid.UUID, payload: dict[str, Any], settings: Settings
) -> str | None:
    """Check a data-URI input, and write it to the bucket if it is too large for the row: the
    reference to keep instead, or None to keep the input as it is."""
    image_url = payload.get("image_url")
    if not isinstance(image_url, str) or not is_data_uri(image_url):
        return None
    if len(image_url) <= INLINE_MAX_CHARS:
        _decode(image_url, settings)  # cheap: on the loop; only to refuse it now
        return None
    # Decoding megabytes and boto3's blocking put both belong off the event loop.
    return await run_in_threadpool(_put_input, request_id, image_url, settings)


def _decode(image_url: str, settings: Settings) -> DataUri:
    try:
        return decode_data_uri(image_url, settings.max_input_bytes)
    except InputRejected as exc:
        raise SubmitRefused(failures.invalid_input(exc.message, exc.error_type)) from exc


def _put_input(request_id: uuid.UUID, image_url: str, settings: Settings) -> str:
    decoded = _decode(image_url, settings)
    try:
        return put_input(get_store(), request_id, decoded.data, decoded.media_type)
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not store the input of request %s: %s", request_id, exc)
        raise SubmitRefused(
            failures.infrastructure(
                "The service's object store is unavailable; retry shortly", "service_unavailable", 503
            )
        ) from exc


def _forget_input(request_id: uuid.UUID, ref: str) -> None:
    try:
        delete_input(get_store(), ref)
    except Exception:
        # The submit's own error is the one to answer with; this object is only an orphan.
        log.warning("could not delete the stored input of refused request %s", request_id, exc_info=True)


async def load(
    app: AppId, request_id: uuid.UUID, caller: Caller = ANONYMOUS, *, with_logs: bool = False
) -> RequestView | None:
    """The request if it belongs to this app's owner/alias and to the caller, with its queue
    position. Another key's request is reported exactly like an unknown one."""
    view = await api_statements.fetch(request_id, with_logs=with_logs)
    if view is None or _queue_base(view.app_id) != app.queue_base:
        return None
    if not caller.owns(view.owner_key_id):
        return None
    return view


@lru_cache(maxsize=256)
def _queue_base(app_id: str) -> str:
    return AppId.parse(app_id).queue_base


async def request_cancel(app: AppId, request_id: uuid.UUID, caller: Caller = ANONYMOUS) -> CancelOutcome:
    if await load(app, request_id, caller) is None:
        return CancelOutcome.NOT_FOUND
    return await run_in_threadpool(_cancel, request_id)


def _cancel(request_id: uuid.UUID) -> CancelOutcome:
    # Cancelling also writes the webhook outbox (core.requests_table): the workers' code path.
    with unit_of_work() as session:
        return cancel(session, request_id, failures.cancelled())
