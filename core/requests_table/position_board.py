"""Queue positions in a long queue, from one ordered read of the waiting rows per process.

Counting the requests ahead costs PostgreSQL time in proportion to the position (about 1.4 ms at
10,000 waiting, 16 ms at 100,000 on the development machine), and every status poll of every
waiting client would pay it: a backlog would make the API slowest exactly when it is busiest.
So the count stops at QUEUE_POSITION_EXACT_UP_TO. Below it positions are exact; at or beyond it
they come from this board: the waiting rows' order keys, read at most every
QUEUE_POSITION_REFRESH_S and shared by every call of this process, where a request's position is
the number of keys before its own (O(log n)). Such a position may be that many seconds old;
fal's clients only display it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from datetime import datetime

from core.config import get_settings
from core.db_async import connection

_ORDER = (
    "SELECT priority, queued_at, id FROM requests WHERE status = 'IN_QUEUE' ORDER BY priority, queued_at, id"
)

Key = tuple[int, datetime, uuid.UUID]


class PositionBoard:
    def __init__(self) -> None:
        self._keys: list[Key] = []
        self._read_at = float("-inf")
        self._refresh: asyncio.Task[None] | None = None

    async def position(
        self, priority: int, queued_at: datetime, request_id: uuid.UUID, *, at_least: int
    ) -> int:
        """The request's position by the board; never below `at_least`, what the capped count saw."""
        if time.monotonic() - self._read_at >= get_settings().queue_position_refresh_s:
            await self._refreshed()
        return max(at_least, bisect.bisect_left(self._keys, (priority, queued_at, request_id)))

    async def _refreshed(self) -> None:
        # One read at a time: concurrent polls wait for the read in flight instead of each
        # starting their own (a task of another, finished event loop is simply replaced).
        task = self._refresh
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._refresh = asyncio.ensure_future(self._read())
        await asyncio.shield(task)

    async def _read(self) -> None:
        async with connection() as conn:
            rows = await conn.fetch(_ORDER)
        self._keys = [(r["priority"], r["queued_at"], r["id"]) for r in rows]
        self._read_at = time.monotonic()


board = PositionBoard()
