"""The requests table's gauges for /metrics: waiting and running requests, counted from the
unfinished rows only.

Each query reads only the rows of a partial index (its WHERE is the index's predicate: waiting,
requests_waiting_order; running, requests_running_lease), so a scrape costs the same whatever
the size of the finished history.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

WAITING = text(
    "SELECT count(*) FILTER (WHERE priority = 0), count(*) FILTER (WHERE priority <> 0),"
    " COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at)), 0)"
    " FROM requests WHERE status = 'IN_QUEUE'"
)
RUNNING = text(
    "SELECT count(*), count(DISTINCT worker) FILTER (WHERE lease_expires_at > now())"
    " FROM requests WHERE status = 'IN_PROGRESS'"
)
QUERIES = (WAITING, RUNNING)


@dataclass(frozen=True)
class QueueDepth:
    waiting_normal: int
    waiting_low: int
    running: int
    oldest_wait_s: float


@dataclass(frozen=True)
class QueueGauges:
    depth: QueueDepth
    busy_workers: int  # worker processes holding a live lease: each runs exactly one request


def read(session: Session) -> QueueGauges:
    waiting_normal, waiting_low, oldest = session.execute(WAITING).one()
    running, busy = session.execute(RUNNING).one()
    depth = QueueDepth(int(waiting_normal), int(waiting_low), int(running), float(oldest))
    return QueueGauges(depth, int(busy))
