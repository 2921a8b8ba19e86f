"""Per-key limits on requests in flight and submissions per minute.

Counted in PostgreSQL inside the submitting transaction, under a transaction-scoped advisory lock
per key: two API replicas submitting for one key at the same instant take turns, so the limits
hold exactly across any number of processes.
"""

from __future__ import annotations

import math
from datetime import timedelta

import asyncpg

from core.clock import utcnow
from core.config import Settings

_WINDOW_S = 60.0
# Both read only what the limits are about, never the key's history: its unfinished rows (the
# partial index requests_unfinished_owner) and its rows of the last minute (requests_owner_recent).
IN_FLIGHT_SQL = "SELECT count(*) FROM requests WHERE owner_key_id = $1 AND status <> 'COMPLETED'"
RECENT_SQL = "SELECT count(*), min(queued_at) FROM requests WHERE owner_key_id = $1 AND queued_at > $2"
# A request in flight ends at an unknown time; clients should come back after about this long.
_IN_FLIGHT_RETRY_S = 5


class LimitExceeded(Exception):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


def enabled(settings: Settings) -> bool:
    return bool(settings.key_max_in_flight or settings.key_max_submits_per_minute)


async def check(conn: asyncpg.Connection, key_id: str, settings: Settings) -> None:
    """Raise LimitExceeded if this key may not submit now. Call inside the transaction that then
    inserts the row, so that the advisory lock covers both."""
    if not enabled(settings):
        return
    # hashtext() folds the key id into the lock's 32-bit key space; a collision only serializes
    # two keys' submissions, it never lets a limit through.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "key-limit:" + key_id)
    if settings.key_max_in_flight:
        in_flight = await conn.fetchval(IN_FLIGHT_SQL, key_id)
        if in_flight >= settings.key_max_in_flight:
            raise LimitExceeded(
                f"Too many requests in flight for this key (limit {settings.key_max_in_flight})",
                _IN_FLIGHT_RETRY_S,
            )
    if settings.key_max_submits_per_minute:
        since = utcnow() - timedelta(seconds=_WINDOW_S)
        count, oldest = await conn.fetchrow(RECENT_SQL, key_id, since)
        if count >= settings.key_max_submits_per_minute:
            # The window frees a slot when its oldest submission leaves it.
            wait = (oldest - since).total_seconds() if oldest is not None else _WINDOW_S
            raise LimitExceeded(
                f"Too many submissions for this key (limit {settings.key_max_submits_per_minute} per minute)",
                max(1, math.ceil(wait)),
            )
