"""What the API does with requests, kept apart from HTTP: create and publish, look up, cancel."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from fastapi.concurrency import run_in_threadpool

from api.app_ids import AppId
from api.auth import ANONYMOUS, Caller
from core import failures, key_limits, request_queries
from core.config import get_settings
from core.db import session_scope
from core.db_async import connection
from core.request_queries import RequestView
from core.request_store import CancelOutcome, cancel, utcnow
from worker.dispatch import background


def parse_request_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def submit(
    app: AppId,
    payload: dict[str, Any],
    *,
    priority: int,
    webhook_url: str | None,
    start_deadline: datetime | None,
    caller: Caller = ANONYMOUS,
    retention_s: int | None = None,
) -> RequestView:
    # The row is committed before anything is published or answered: an accepted request is
    # never lost, at worst published later by the reconciler.
    settings = get_settings()
    values = {
        "request_id": uuid.uuid4(),
        "app_id": app.full,
        "payload": payload,
        "priority": priority,
        "queued_at": utcnow(),
        "webhook_url": webhook_url,
        "start_deadline": start_deadline,
        "owner_key_id": caller.key_id,
        "retention_s": retention_s,
    }
    async with connection() as conn:
        if caller.key_id is not None and key_limits.enabled(settings):
            async with conn.transaction():
                await key_limits.check(conn, caller.key_id, settings)
                view = await request_queries.insert(conn, **values)
        else:
            view = await request_queries.insert(conn, **values)
    background.enqueue(view.id, priority)
    return await request_queries.settle_position(view)


async def load(
    app: AppId, request_id: uuid.UUID, caller: Caller = ANONYMOUS, *, with_logs: bool = False
) -> RequestView | None:
    """The request if it belongs to this app's owner/alias and to the caller, with its queue
    position. Another key's request is reported exactly like an unknown one."""
    view = await request_queries.fetch(request_id, with_logs=with_logs)
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
    # Cancelling also writes the webhook outbox (core.request_store): the workers' code path.
    with session_scope() as session:
        return cancel(session, request_id, failures.cancelled())
