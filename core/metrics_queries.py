"""What /metrics reads from PostgreSQL: a scrape whose cost does not depend on the history.

Why from the database and not from in-process counters: requests are submitted to one API
replica, run by another process and completed there, and any replica may be scraped. Reading
shared state makes every replica report the same truth with no multiprocess bookkeeping, and
the numbers survive restarts.

This module puts the scrape together from each table's own reads, none of them of finished rows:
- Counters and histograms (requests completed, queue wait, run time, engine stages, webhook
  attempts) are the rollups that each finishing transaction adds to (core/metric_rollups.py):
  one GROUP BY over a few hundred rows. Deleting finished rows leaves them, so they only grow.
- Gauges are counted from the unfinished rows, each query bounded by a partial index of them:
  waiting and running requests in core/requests_table/gauges.py; pending deliveries
  (webhook_deliveries_due) and running attempts (webhook_attempts_open) here. The two gauges of
  finished things, COMPLETED requests and delivered/failed deliveries, are rollups too: what
  entered the state minus what left it (a redelivery, the retention sweep's deletions).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from core import metric_rollups as rollups
from core.metric_rollups import RUN_BUCKETS, STAGE_BUCKETS, WAIT_BUCKETS, Histogram
from core.requests_table import gauges
from core.requests_table.gauges import QueueDepth

__all__ = ["RUN_BUCKETS", "STAGE_BUCKETS", "WAIT_BUCKETS", "Histogram", "QueueDepth", "Snapshot", "snapshot"]

# Reads only the rows of the partial indexes webhook_deliveries_due and webhook_attempts_open.
WEBHOOKS_UNFINISHED = text(
    "SELECT (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'),"
    " (SELECT count(*) FROM webhook_attempts WHERE finished_at IS NULL)"
)
# Every gauge query of a scrape, the requests table's and the webhook tables'.
GAUGE_QUERIES = (*gauges.QUERIES, WEBHOOKS_UNFINISHED)


@dataclass(frozen=True)
class Snapshot:
    by_status: dict[str, int]  # IN_QUEUE, IN_PROGRESS, COMPLETED
    completed_by_outcome: dict[str, int]  # `ok`, or the failure's error_type
    depth: QueueDepth
    busy_workers: int  # worker processes holding a live lease: each runs exactly one request
    wait: Histogram  # queued to (last) start, finished requests that started
    run: Histogram  # (last) start to completion, failures included
    stages: dict[str, Histogram]  # engine stage timings that workers store with each result
    deliveries_by_state: dict[str, int]  # pending, delivered, failed
    # delivered (2xx), http_error (any other answer), error (timeout, refused, no connection),
    # and running: the attempts open now (not finished, or their dispatcher died)
    attempts_by_outcome: dict[str, int]


def snapshot(session: Session) -> Snapshot:
    """Everything /metrics reports from PostgreSQL: one read of the rollups, three of the gauges."""
    sums = rollups.read(session)
    queue = gauges.read(session)
    pending, open_attempts = session.execute(WEBHOOKS_UNFINISHED).one()

    outcomes = sums.counter(rollups.COMPLETED)
    deleted = sums.counter(rollups.DELETED).get("", 0)
    depth = queue.depth
    finished_deliveries = sums.counter(rollups.DELIVERIES)
    return Snapshot(
        by_status={
            "IN_QUEUE": depth.waiting_normal + depth.waiting_low,
            "IN_PROGRESS": depth.running,
            "COMPLETED": sum(outcomes.values()) - deleted,
        },
        completed_by_outcome=outcomes,
        depth=depth,
        busy_workers=queue.busy_workers,
        wait=sums.histogram(rollups.QUEUE_WAIT, "", WAIT_BUCKETS),
        run=sums.histogram(rollups.RUN, "", RUN_BUCKETS),
        stages={
            stage: sums.histogram(rollups.STAGE, stage, STAGE_BUCKETS) for stage in sums.labels(rollups.STAGE)
        },
        deliveries_by_state={
            "pending": int(pending),
            "delivered": finished_deliveries.get("delivered", 0),
            "failed": finished_deliveries.get("failed", 0),
        },
        attempts_by_outcome={**sums.counter(rollups.ATTEMPTS), "running": int(open_attempts)},
    )
