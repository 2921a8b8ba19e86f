"""Counters and histograms for /metrics, kept up to date as work finishes.

A rollup row holds one counter, or one histogram bucket, of one shard: `count` observations
summing to `total`. Each transition that finishes something (a request completes, a webhook
attempt ends, a delivery changes state, the retention sweep deletes rows) adds its increments
here, and they are written by one upsert just before its transaction commits, so they count
exactly when the transition does (a rollback takes both back) and a scrape sums a few hundred
rows instead of reading the history.

Why the write is deferred to the commit and spread over shards: a transaction may finish many
things (the reconciler fails a batch of timed-out requests in one), and concurrent ones touch the
same counters. One statement per transaction, its rows locked in a fixed order, cannot deadlock
with another; taking its locks last keeps them for the commit only; and a random shard per
transaction lets concurrent completions update different rows instead of queueing on one.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Float, SmallInteger, Text, event, text
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from core.models import Base, RequestRow

SHARDS = 16
INF = math.inf

# Upper bounds (seconds): waits span sub-second to an hour of backlog, runs a GPU edit (about a
# second) to a slow CPU one, stages a few milliseconds to seconds. Rows store the bound itself,
# so a later change of bounds leaves the history readable (old buckets keep their own `le`).
WAIT_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
STAGE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Families. Counters use the bucket INF; histograms the bucket's upper bound (INF: above all).
COMPLETED = "requests_completed"  # label: `ok` or the error_type
DELETED = "requests_deleted"  # finished rows the retention sweep deleted
QUEUE_WAIT = "queue_wait_seconds"
RUN = "run_seconds"
STAGE = "engine_stage_seconds"  # label: the stage
ATTEMPTS = "webhook_attempts"  # label: delivered, http_error, error
# Net transitions into (+1) and out of (-1) the finished delivery states: the gauge's value
# without counting the rows. Label: delivered, failed.
DELIVERIES = "webhook_deliveries"


class MetricRollup(Base):
    __tablename__ = "metric_rollups"

    family: Mapped[str] = mapped_column(Text, primary_key=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[float] = mapped_column(Float, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)

    # Every write updates a row in place without changing an indexed column: room on the page
    # keeps those updates HOT (no index entry per update).
    __table_args__ = ({"postgresql_with": {"fillfactor": 50}},)


# The columns of the completing UPDATE's RETURNING that record_completion reads, besides `error`
# (the webhook payload's columns have it already).
COMPLETION_COLUMNS = (
    RequestRow.queued_at,
    RequestRow.started_at,
    RequestRow.finished_at,
    RequestRow.error,
    RequestRow.error_type,
    RequestRow.metrics,
)

Key = tuple[str, str, float]
# Session.info key: this transaction's increments, {(family, label, bucket): [count, total]}.
_PENDING = "metric_rollups_pending"
# Set once a session carries the two listeners that write (or drop) its pending increments.
_HOOKED = "metric_rollups_hooked"

# ORDER BY: the rows' locks are taken in this one order by every transaction.
_UPSERT = text(
    """
    INSERT INTO metric_rollups (family, label, bucket, shard, count, total)
    SELECT u.family, u.label, u.bucket, :shard, u.count, u.total
    FROM unnest(CAST(:families AS text[]), CAST(:labels AS text[]), CAST(:buckets AS float8[]),
                CAST(:counts AS int8[]), CAST(:totals AS float8[]))
         AS u(family, label, bucket, count, total)
    ORDER BY u.family, u.label, u.bucket
    ON CONFLICT (family, label, bucket, shard) DO UPDATE
    SET count = metric_rollups.count + excluded.count, total = metric_rollups.total + excluded.total
    """
)

READ = text(
    "SELECT family, label, bucket, sum(count), sum(total) FROM metric_rollups GROUP BY family, label, bucket"
)


def _add(session: Session, family: str, label: str, bucket: float, count: int, total: float = 0.0) -> None:
    if not session.info.get(_HOOKED):
        # On this session only: the rest of the process's sessions pay nothing at their commits.
        event.listen(session, "before_commit", _write_pending)
        event.listen(session, "after_transaction_end", _forget_pending)
        session.info[_HOOKED] = True
    pending: dict[Key, list[Any]] = session.info.setdefault(_PENDING, {})
    entry = pending.setdefault((family, label, bucket), [0, 0.0])
    entry[0] += count
    entry[1] += total


def _observe(session: Session, family: str, label: str, bounds: Sequence[float], value: float) -> None:
    # bisect_left: a value equal to a bound belongs to that bucket (Prometheus' `le`).
    index = bisect.bisect_left(bounds, value)
    _add(session, family, label, float(bounds[index]) if index < len(bounds) else INF, 1, value)


def outcome_of(error: str | None, error_type: str | None) -> str:
    """`ok`, or the failure's error_type (client_cancelled, request_timeout, …)."""
    return "ok" if error is None else (error_type or "error")


def record_completion(session: Session, done: Any) -> None:
    """A request has just completed in this transaction; `done` has COMPLETION_COLUMNS."""
    _add(session, COMPLETED, outcome_of(done.error, done.error_type), INF, 1)
    if done.started_at is not None and done.finished_at is not None:
        _observe(session, QUEUE_WAIT, "", WAIT_BUCKETS, (done.started_at - done.queued_at).total_seconds())
        _observe(session, RUN, "", RUN_BUCKETS, (done.finished_at - done.started_at).total_seconds())
    stages = done.metrics.get("stages") if isinstance(done.metrics, dict) else None
    if isinstance(stages, dict):
        for stage, seconds in stages.items():
            # Workers write numbers; anything else (a hand-edited row) is not a timing.
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and math.isfinite(seconds):
                _observe(session, STAGE, str(stage), STAGE_BUCKETS, float(seconds))


def record_attempts(session: Session, outcome: str, n: int = 1) -> None:
    """`n` webhook attempts finished with `outcome` (delivered, http_error, error)."""
    if n:
        _add(session, ATTEMPTS, outcome, INF, n)


def record_delivery_state(session: Session, state: str, change: int) -> None:
    """A delivery entered (+1) or left (-1) the finished state `state` (delivered, failed)."""
    if state in ("delivered", "failed") and change:
        _add(session, DELIVERIES, state, INF, change)


def record_deleted(session: Session, *, requests: int, deliveries_by_state: Mapping[str, int]) -> None:
    """The caller's transaction deletes `requests` finished request rows and, with them, these
    webhook deliveries by state: the gauges drop by as much, the counters stay.

    Call it in the deleting transaction (the numbers are written when it commits). `pending`
    deliveries may be passed too; that gauge is counted from the rows and needs no rollup.
    """
    if requests:
        _add(session, DELETED, "", INF, requests)
    for state, n in deliveries_by_state.items():
        record_delivery_state(session, state, -n)


def _write_pending(session: Session) -> None:
    pending: dict[Key, list[Any]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    keys = sorted(pending)
    session.execute(
        _UPSERT,
        {
            "shard": random.randrange(SHARDS),
            "families": [k[0] for k in keys],
            "labels": [k[1] for k in keys],
            "buckets": [float(k[2]) for k in keys],
            "counts": [int(pending[k][0]) for k in keys],
            "totals": [float(pending[k][1]) for k in keys],
        },
    )


def _forget_pending(session: Session, transaction: SessionTransaction) -> None:
    # Increments of a transaction that rolled back (or was closed without a commit) never count.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


@dataclass(frozen=True)
class Histogram:
    cumulative: list[int]  # one count per bucket bound, each including the ones below
    count: int
    total: float


@dataclass
class Rollups:
    """The sums over shards, as the scrape reads them."""

    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    # (family, label) -> {bucket bound: (count, total)}
    buckets: dict[tuple[str, str], dict[float, tuple[int, float]]] = field(default_factory=dict)

    def counter(self, family: str) -> dict[str, int]:
        return {label: n for (f, label), n in self.counters.items() if f == family}

    def histogram(self, family: str, label: str, bounds: Sequence[float]) -> Histogram:
        found = self.buckets.get((family, label), {})
        cumulative = [sum(n for le, (n, _) in found.items() if le <= bound) for bound in bounds]
        return Histogram(
            cumulative, sum(n for n, _ in found.values()), sum(total for _, total in found.values())
        )

    def labels(self, family: str) -> list[str]:
        return sorted(label for f, label in self.buckets if f == family)


def read(session: Session) -> Rollups:
    rollups = Rollups()
    for family, label, bucket, count, total in session.execute(READ).all():
        key = (str(family), str(label))
        if family in (QUEUE_WAIT, RUN, STAGE):
            rollups.buckets.setdefault(key, {})[float(bucket)] = (int(count), float(total))
        else:
            rollups.counters[key] = rollups.counters.get(key, 0) + int(count)
    return rollups
