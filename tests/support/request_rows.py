"""Request rows for tests, made by the insert the API runs (core.requests_table.insert).

So that a test's rows are exactly what a submit writes, they go through that one statement, on
an asyncpg connection set up as the API's pool sets up its own (core.db_async.setup_connection).
Rows a test needs in another state are then moved by the production transitions (claim,
complete_ok, ...) or, for a state no transition makes, by an UPDATE in the test itself.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from core.clock import utcnow
from core.config import get_settings
from core.db import session_scope
from core.db_async import asyncpg_dsn, setup_connection
from core.models import RequestRow
from core.requests_table import get, insert


def insert_requests(
    n: int,
    *,
    app_id: str,
    payload: dict[str, Any],
    priority: int = 0,
    database_url: str | None = None,
    **values: Any,
) -> list[uuid.UUID]:
    """Insert `n` waiting requests (into `database_url`, default DATABASE_URL); their ids in
    insertion order. `values`: the insert's other keywords (webhook_url, start_deadline,
    owner_key_id, retention_s)."""
    return asyncio.run(
        _insert(n, database_url or get_settings().database_url, app_id, payload, priority, values)
    )


def insert_request(*, app_id: str, payload: dict[str, Any], priority: int = 0, **values: Any) -> uuid.UUID:
    """Insert one waiting request; its id."""
    (request_id,) = insert_requests(1, app_id=app_id, payload=payload, priority=priority, **values)
    return request_id


async def _insert(
    n: int, database_url: str, app_id: str, payload: dict[str, Any], priority: int, values: dict[str, Any]
) -> list[uuid.UUID]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await setup_connection(conn)
        ids: list[uuid.UUID] = []
        for _ in range(n):
            view = await insert(
                conn,
                request_id=uuid.uuid4(),
                app_id=app_id,
                payload=payload,
                priority=priority,
                queued_at=utcnow(),
                **values,
            )
            ids.append(view.id)
        return ids
    finally:
        await conn.close()


def load_row(request_id: uuid.UUID) -> RequestRow:
    """The request's row as it is now, detached from its session (asserted to exist)."""
    with session_scope() as session:
        row = get(session, request_id)
        assert row is not None, request_id
        session.expunge(row)
        return row
