"""`GET /metrics`: Prometheus exposition, read at scrape time (core/metrics_queries.py).

Every family comes from shared state, PostgreSQL (rollups kept as work finishes, and the
unfinished rows) or the workers' Redis heartbeats, never from this process's memory, so all API
replicas expose the same values: scrape one of them (through the service address), or aggregate
with max(), not sum().
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core import metrics_queries as q
from core.config import get_settings
from core.db import session_scope
from queueing import heartbeat

log = logging.getLogger(__name__)

PREFIX = "portrait"
STATUSES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
DELIVERY_STATES = ("pending", "delivered", "failed")
ATTEMPT_OUTCOMES = ("delivered", "http_error", "error", "running")


def _buckets(histogram: q.Histogram, bounds: Sequence[float]) -> list[tuple[str, float]]:
    pairs = [(repr(float(b)), float(n)) for b, n in zip(bounds, histogram.cumulative, strict=True)]
    return [*pairs, ("+Inf", float(histogram.count))]


class DatabaseCollector(Collector):
    """Requests, queue, workers, webhooks and engine stages, read fresh on every scrape."""

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily(
            f"{PREFIX}_metrics_source_up", "1 if the source answered this scrape", labels=["source"]
        )
        try:
            yield from self._from_database()
            up.add_metric(["database"], 1)
        except Exception:
            log.warning("metrics: the database query failed", exc_info=True)
            up.add_metric(["database"], 0)
        try:
            yield from self._from_heartbeats()
            up.add_metric(["redis"], 1)
        except Exception:
            log.warning("metrics: the worker heartbeats could not be read", exc_info=True)
            up.add_metric(["redis"], 0)
        yield up
        yield GaugeMetricFamily(
            f"{PREFIX}_metrics_scrape_seconds",
            "Time this scrape spent querying",
            value=time.perf_counter() - started,
        )

    def _from_database(self) -> Iterator[Metric]:
        # Everything is gathered before anything is yielded: a failing query yields nothing half.
        with session_scope() as session:
            snap = q.snapshot(session)
        by_status, outcomes, depth = snap.by_status, snap.completed_by_outcome, snap.depth
        busy, wait, run, stages = snap.busy_workers, snap.wait, snap.run, snap.stages
        deliveries, attempts = snap.deliveries_by_state, snap.attempts_by_outcome

        requests = GaugeMetricFamily(
            f"{PREFIX}_requests", "Requests in the table by status", labels=["status"]
        )
        for status in STATUSES:
            requests.add_metric([status], by_status.get(status, 0))
        completed = CounterMetricFamily(
            f"{PREFIX}_requests_completed",
            "Finished requests by outcome (ok or error_type)",
            labels=["outcome"],
        )
        for outcome, n in sorted(outcomes.items()):
            completed.add_metric([outcome], n)
        yield requests
        yield completed

        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Requests waiting or running: the autoscaling signal",
            value=depth.waiting_normal + depth.waiting_low + depth.running,
        )
        waiting = GaugeMetricFamily(
            f"{PREFIX}_queue_waiting", "Requests waiting by priority", labels=["priority"]
        )
        waiting.add_metric(["normal"], depth.waiting_normal)
        waiting.add_metric(["low"], depth.waiting_low)
        yield waiting
        yield GaugeMetricFamily(f"{PREFIX}_queue_running", "Requests running", value=depth.running)
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_wait_seconds",
            "Age of the oldest waiting request",
            value=depth.oldest_wait_s,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_workers_busy", "Worker processes running a request (live leases)", value=busy
        )

        wait_family = HistogramMetricFamily(
            f"{PREFIX}_queue_wait_seconds", "Submit to start, finished requests"
        )
        wait_family.add_metric([], _buckets(wait, q.WAIT_BUCKETS), wait.total)
        run_family = HistogramMetricFamily(f"{PREFIX}_run_seconds", "Start to completion, finished requests")
        run_family.add_metric([], _buckets(run, q.RUN_BUCKETS), run.total)
        stage_family = HistogramMetricFamily(
            f"{PREFIX}_engine_stage_seconds", "Engine stage timings reported by workers", labels=["stage"]
        )
        for stage, histogram in stages.items():
            stage_family.add_metric([stage], _buckets(histogram, q.STAGE_BUCKETS), histogram.total)
        yield wait_family
        yield run_family
        yield stage_family

        delivery_family = GaugeMetricFamily(
            f"{PREFIX}_webhook_deliveries", "Webhook deliveries by state", labels=["state"]
        )
        for state in DELIVERY_STATES:
            delivery_family.add_metric([state], deliveries.get(state, 0))
        attempt_family = CounterMetricFamily(
            f"{PREFIX}_webhook_attempts", "Webhook delivery attempts by outcome", labels=["outcome"]
        )
        for outcome in ATTEMPT_OUTCOMES:
            attempt_family.add_metric([outcome], attempts.get(outcome, 0))
        yield delivery_family
        yield attempt_family

    def _from_heartbeats(self) -> Iterator[Metric]:
        beats = heartbeat.read_all(get_settings())
        nodes: dict[str, int] = {}
        slots: dict[str, int] = {}
        for beat in beats:
            nodes[beat.kind] = nodes.get(beat.kind, 0) + 1
            slots[beat.kind] = slots.get(beat.kind, 0) + beat.concurrency
        workers = GaugeMetricFamily(
            f"{PREFIX}_workers", "Live worker nodes (recent Redis heartbeat) by kind", labels=["kind"]
        )
        processes = GaugeMetricFamily(
            f"{PREFIX}_worker_processes",
            "Worker processes (concurrency) of live nodes by kind",
            labels=["kind"],
        )
        for kind in sorted({"edit", "webhooks", *nodes}):
            workers.add_metric([kind], nodes.get(kind, 0))
            processes.add_metric([kind], slots.get(kind, 0))
        yield workers
        yield processes


def build_registry() -> CollectorRegistry:
    # A registry of our own: the default one would also collect per-process state that differs
    # between replicas, and re-registering across test apps would fail.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return registry


def metrics_router() -> APIRouter:
    registry = build_registry()
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        # A sync endpoint: FastAPI runs it in the threadpool, so the queries block no event loop.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
