"""The aggregates behind /metrics, read from PostgreSQL at scrape time.

Why from the database and not from in-process counters: requests are submitted to one API
replica, run by another process and completed there, and any replica may be scraped. Counting
the rows makes every replica report the same truth with no multiprocess bookkeeping, and the
numbers survive restarts. Histograms of wait and run time are therefore cumulative over the
finished rows still in the table (rows deleted by retention leave them, which Prometheus sees as
a counter reset, handled by rate()/increase()). Each query is one aggregate pass over the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

# Upper bounds (seconds): waits span sub-second to an hour of backlog, runs a GPU edit (about a
# second) to a slow CPU one, stages a few milliseconds to seconds.
WAIT_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
STAGE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_WAIT = "EXTRACT(EPOCH FROM started_at - queued_at)"
_RUN = "EXTRACT(EPOCH FROM finished_at - started_at)"
_FINISHED_AND_STARTED = "status = 'COMPLETED' AND started_at IS NOT NULL AND finished_at IS NOT NULL"


@dataclass(frozen=True)
class Histogram:
    cumulative: list[int]  # one count per bucket bound, each including the ones below
    count: int
    total: float


@dataclass(frozen=True)
class QueueDepth:
    waiting_normal: int
    waiting_low: int
    running: int
    oldest_wait_s: float


def _bucket_columns(value: str, buckets: Sequence[float]) -> str:
    # Bounds are our own float constants, not input: formatting them into the SQL is safe.
    return ", ".join(f"count(*) FILTER (WHERE {value} <= {float(b)!r})" for b in buckets)


def _histogram(row: Sequence[Any], buckets: Sequence[float]) -> Histogram:
    counts = [int(v or 0) for v in row[: len(buckets)]]
    return Histogram(counts, int(row[len(buckets)] or 0), float(row[len(buckets) + 1] or 0.0))


def requests_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(text("SELECT status, count(*) FROM requests GROUP BY status")).all()
    return {str(status): int(n) for status, n in rows}


def completed_by_outcome(session: Session) -> dict[str, int]:
    """`ok`, or the failure's error_type (client_cancelled, request_timeout, …)."""
    rows = session.execute(
        text(
            "SELECT CASE WHEN error IS NULL THEN 'ok' ELSE COALESCE(error_type, 'error') END AS outcome,"
            " count(*) FROM requests WHERE status = 'COMPLETED' GROUP BY outcome"
        )
    ).all()
    return {str(outcome): int(n) for outcome, n in rows}


def queue_depth(session: Session) -> QueueDepth:
    row = session.execute(
        text(
            "SELECT count(*) FILTER (WHERE status = 'IN_QUEUE' AND priority = 0),"
            " count(*) FILTER (WHERE status = 'IN_QUEUE' AND priority <> 0),"
            " count(*) FILTER (WHERE status = 'IN_PROGRESS'),"
            " COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at) FILTER (WHERE status = 'IN_QUEUE')), 0)"
            " FROM requests WHERE status <> 'COMPLETED'"
        )
    ).one()
    return QueueDepth(int(row[0]), int(row[1]), int(row[2]), float(row[3]))


def busy_workers(session: Session) -> int:
    """Worker processes holding a live lease: each runs exactly one request."""
    return int(
        session.execute(
            text(
                "SELECT count(DISTINCT worker) FROM requests"
                " WHERE status = 'IN_PROGRESS' AND lease_expires_at > now()"
            )
        ).scalar_one()
    )


def wait_histogram(session: Session) -> Histogram:
    """Queued to (last) start, over finished requests that started."""
    sql = (
        f"SELECT {_bucket_columns(_WAIT, WAIT_BUCKETS)}, count(*), sum({_WAIT})"
        f" FROM requests WHERE {_FINISHED_AND_STARTED}"
    )
    return _histogram(session.execute(text(sql)).one(), WAIT_BUCKETS)


def run_histogram(session: Session) -> Histogram:
    """(Last) start to completion, failures included."""
    sql = (
        f"SELECT {_bucket_columns(_RUN, RUN_BUCKETS)}, count(*), sum({_RUN})"
        f" FROM requests WHERE {_FINISHED_AND_STARTED}"
    )
    return _histogram(session.execute(text(sql)).one(), RUN_BUCKETS)


def stage_histograms(session: Session) -> dict[str, Histogram]:
    """Engine stage timings that workers store in each finished row's metrics.stages."""
    value = "s.value::float8"
    sql = (
        f"SELECT s.key, {_bucket_columns(value, STAGE_BUCKETS)}, count(*), sum({value})"
        " FROM requests r CROSS JOIN LATERAL jsonb_each_text("
        "   CASE WHEN jsonb_typeof(r.metrics -> 'stages') = 'object'"
        "   THEN r.metrics -> 'stages' ELSE '{}'::jsonb END) AS s"
        " WHERE r.status = 'COMPLETED' GROUP BY s.key ORDER BY s.key"
    )
    return {str(row[0]): _histogram(row[1:], STAGE_BUCKETS) for row in session.execute(text(sql)).all()}


def webhook_deliveries_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(text("SELECT state, count(*) FROM webhook_deliveries GROUP BY state")).all()
    return {str(state): int(n) for state, n in rows}


def webhook_attempts_by_outcome(session: Session) -> dict[str, int]:
    """`delivered` (2xx), `http_error` (any other answer), `error` (timeout, refused, no
    connection) and `running` (not finished yet, or its dispatcher died)."""
    rows = session.execute(
        text(
            "SELECT CASE WHEN finished_at IS NULL THEN 'running'"
            " WHEN status_code BETWEEN 200 AND 299 THEN 'delivered'"
            " WHEN status_code IS NOT NULL THEN 'http_error' ELSE 'error' END AS outcome,"
            " count(*) FROM webhook_attempts GROUP BY outcome"
        )
    ).all()
    return {str(outcome): int(n) for outcome, n in rows}
