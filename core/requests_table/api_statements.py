"""The API's insert and read of request rows, as single SQL statements over asyncpg.

A status poll is one round trip (row and queue position together), a submit is one INSERT whose
statement also counts the requests ahead. They run on asyncpg, not SQLAlchemy, for throughput
(core/db_async.py says why). This insert is the only way a request row is made, in production
and in the tests alike; every state change after it belongs to the workers and the reconciler
(core.requests_table.transitions, core.requests_table.stale).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from core.config import get_settings
from core.db_async import fetch_with_retry
from core.models import Status
from core.requests_table.position_board import board

# Waiting requests that run before the one named by {p} (priority), {q} (queued_at), {i} (id):
# higher priority (lower number) first, then older first; counted up to {cap} at most (beyond,
# core.requests_table.position_board answers). The extra `queued_at <= {q}` lets the partial index
# requests_waiting_order bound the scan of the request's own priority.
_AHEAD = """(SELECT count(*) FROM (SELECT 1 FROM requests w
    WHERE w.status = 'IN_QUEUE'
      AND (w.priority < {p}
           OR (w.priority = {p} AND w.queued_at <= {q} AND (w.queued_at, w.id) < ({q}, {i})))
    LIMIT {cap}) ahead)"""

_INSERT = f"""
WITH ins AS (
    INSERT INTO requests (id, app_id, status, priority, input, webhook_url, start_deadline,
                          owner_key_id, retention_s, queued_at, no_retry, store_io, logs)
    VALUES ($1, $2, 'IN_QUEUE', $3, $4, $5, $6, $7, $8, $9, $11, $12, '[]'::jsonb)
    RETURNING id
)
SELECT {_AHEAD.format(p="$3", q="$9", i="$1", cap="$10")} AS queue_position FROM ins
"""

_COLUMNS = (
    "id, app_id, status, priority, owner_key_id, queued_at, metrics, output, error, error_type,"
    " error_status, error_body, expired_at, timeout_type"
)

_FETCH = f"""
SELECT {_COLUMNS},
       CASE WHEN $2 THEN r.logs END AS logs,
       CASE WHEN r.status = 'IN_QUEUE'
            THEN {_AHEAD.format(p="r.priority", q="r.queued_at", i="r.id", cap="$3")} END AS queue_position
FROM requests r WHERE r.id = $1
"""


@dataclass(frozen=True)
class RequestView:
    """What the API shows of a request row (logs only when they were asked for)."""

    id: uuid.UUID
    app_id: str
    status: str
    priority: int
    owner_key_id: str | None
    queued_at: datetime
    queue_position: int | None = None
    logs: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    error_status: int | None = None
    error_body: dict[str, Any] | None = None
    expired_at: datetime | None = None
    timeout_type: str | None = None


async def insert(
    conn: asyncpg.Connection,
    *,
    request_id: uuid.UUID,
    app_id: str,
    payload: dict[str, Any],
    priority: int,
    queued_at: datetime,
    webhook_url: str | None = None,
    start_deadline: datetime | None = None,
    owner_key_id: str | None = None,
    retention_s: int | None = None,
    no_retry: bool = False,
    store_io: bool = True,
) -> RequestView:
    """Insert a waiting request. Its queue_position is the capped count: pass the view through
    settle_position once the connection is back in the pool (the board may need one)."""
    cap = get_settings().queue_position_exact_up_to
    position = await conn.fetchval(
        _INSERT,
        request_id,
        app_id,
        priority,
        payload,
        webhook_url,
        start_deadline,
        owner_key_id,
        retention_s,
        queued_at,
        cap,
        no_retry,
        store_io,
    )
    return RequestView(
        id=request_id,
        app_id=app_id,
        status=Status.IN_QUEUE.value,
        priority=priority,
        owner_key_id=owner_key_id,
        queued_at=queued_at,
        queue_position=int(position),
        logs=[],
    )


async def fetch(request_id: uuid.UUID, *, with_logs: bool) -> RequestView | None:
    cap = get_settings().queue_position_exact_up_to
    record = await fetch_with_retry(_FETCH, request_id, with_logs, cap)
    if record is None:
        return None
    values = dict(record.items())
    position = values.pop("queue_position")
    view = RequestView(**values, queue_position=None if position is None else int(position))
    return await settle_position(view)


async def settle_position(view: RequestView) -> RequestView:
    """A counted position that reached the cap, replaced by the board's. Never call it while
    holding a pooled connection: the board's read takes one, and a full pool would wait on
    itself."""
    cap = get_settings().queue_position_exact_up_to
    if view.queue_position is None or view.queue_position < cap:
        return view
    position = await board.position(view.priority, view.queued_at, view.id, at_least=cap)
    return replace(view, queue_position=position)
