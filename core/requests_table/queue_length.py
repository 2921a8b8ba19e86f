"""?fal_max_queue_length: whether more than N requests of an endpoint are already waiting.

The count is exact (the submitting connection's own read, no cache) and stops at N + 1: it reads
at most N + 1 entries of the partial index requests_waiting_app, whatever the backlog or the
finished history.
"""

from __future__ import annotations

import asyncpg

# ORDER BY id is what requests_waiting_app (app_id, id) gives as it is read: without it the
# planner may pick a scan (or the waiting-order index) that meets the endpoint's rows only late,
# and read the whole backlog to count a few.
_WAITING_UP_TO = (
    "SELECT count(*) FROM (SELECT 1 FROM requests"
    " WHERE status = 'IN_QUEUE' AND app_id = $1 ORDER BY id LIMIT $2) waiting"
)
# A waiting request leaves the queue at an unknown time; come back after about this long.
RETRY_AFTER_S = 5


class QueueLengthExceeded(Exception):
    def __init__(self, app_id: str, limit: int) -> None:
        self.message = f"More than {limit} requests are waiting for {app_id} (fal_max_queue_length={limit})"
        super().__init__(self.message)
        self.retry_after_s = RETRY_AFTER_S


async def check(conn: asyncpg.Connection, app_id: str, limit: int) -> None:
    """Raise QueueLengthExceeded if more than `limit` requests of `app_id` are waiting."""
    waiting = await conn.fetchval(_WAITING_UP_TO, app_id, limit + 1)
    if waiting > limit:
        raise QueueLengthExceeded(app_id, limit)
