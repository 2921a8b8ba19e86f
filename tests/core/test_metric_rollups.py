"""The rollups behind /metrics against the real PostgreSQL, on a scratch database of their own so
that the counts are exact: the migration's backfill, completions in concurrent sessions, webhook
transitions, deletion of finished rows, and a scrape that reads no finished row at 50,000 of them.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from core import failures, metric_rollups, metrics_queries
from core.clock import utcnow
from core.migrate import upgrade
from core.requests_table import claim, complete_failed, complete_ok, expire_unstarted
from core.webhook_models import DeliveryState, WebhookDelivery
from core.webhook_outbox import Outcome, claim_attempt, finish_attempt, restart
from tests.support.databases import empty_database
from tests.support.request_rows import insert_requests

APP = "test/rollups"
STAGES = {"detect": 0.004, "warping": 0.3, "encode": 0.02}


@dataclass(frozen=True)
class Scratch:
    url: str
    engine: Engine
    factory: sessionmaker[Session]

    @contextmanager
    def scope(self) -> Iterator[Session]:
        session = self.factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def snapshot(self) -> metrics_queries.Snapshot:
        with self.scope() as session:
            return metrics_queries.snapshot(session)


# Rows as 0004 knew them, for the backfill: two timed successes with stages, a failure that
# ran, a timeout that never started; one delivery with a 2xx, an http error, a lost attempt and
# one attempt still open.
_HISTORY = """
INSERT INTO requests (id, app_id, status, priority, input, queued_at, started_at, finished_at,
                      metrics, error, error_type)
VALUES
  (gen_random_uuid(), 'h', 'COMPLETED', 0, '{}', now() - interval '10 s', now() - interval '9.8 s',
   now() - interval '8.8 s', '{"stages": {"warping": 0.3, "encode": 0.02}}', NULL, NULL),
  (gen_random_uuid(), 'h', 'COMPLETED', 0, '{}', now() - interval '10 s', now() - interval '7 s',
   now() - interval '1 s', '{"stages": {"warping": 2.0, "odd": "x"}}', NULL, NULL),
  (gen_random_uuid(), 'h', 'COMPLETED', 0, '{}', now() - interval '5 s', now() - interval '4 s',
   now() - interval '3 s', NULL, 'boom', 'runner_lost'),
  (gen_random_uuid(), 'h', 'COMPLETED', 0, '{}', now() - interval '5 s', NULL, now(), NULL,
   'late', 'request_timeout'),
  (gen_random_uuid(), 'h', 'IN_QUEUE', 0, '{}', now(), NULL, NULL, NULL, NULL, NULL);
INSERT INTO webhook_deliveries (id, request_id, url, user_id, body, state, next_attempt_at, created_at)
SELECT gen_random_uuid(), id, 'http://127.0.0.1:9/h', 'u', '{}', 'delivered', now(), now()
FROM requests WHERE error IS NULL AND status = 'COMPLETED';
INSERT INTO webhook_attempts (delivery_id, number, started_at, finished_at, status_code, error)
SELECT id, n, now(), CASE WHEN n < 4 THEN now() END, (ARRAY[200, 500, NULL, NULL])[n],
       CASE WHEN n = 3 THEN 'lost' END
FROM webhook_deliveries CROSS JOIN generate_series(1, 4) AS n;
"""


@pytest.fixture(scope="module")
def scratch(migrated: dict[str, str]) -> Iterator[Scratch]:
    with empty_database(migrated["DATABASE_URL"], "rollups") as scratch_url:
        engine = create_engine(scratch_url, pool_size=12)
        try:
            upgrade(scratch_url, "0004")
            with engine.begin() as connection:
                connection.exec_driver_sql(_HISTORY)
            upgrade(scratch_url)
            yield Scratch(scratch_url, engine, sessionmaker(bind=engine, expire_on_commit=False))
        finally:
            engine.dispose()


def test_the_backfill_continues_what_the_rows_said(scratch: Scratch) -> None:
    snap = scratch.snapshot()
    assert snap.completed_by_outcome == {"ok": 2, "runner_lost": 1, "request_timeout": 1}
    assert snap.by_status == {"IN_QUEUE": 1, "IN_PROGRESS": 0, "COMPLETED": 4}
    # Waits 0.2, 3, 1 s; runs 1, 6, 1 s (the timeout never started).
    assert (snap.wait.count, snap.run.count) == (3, 3)
    assert snap.wait.total == pytest.approx(4.2)
    assert snap.wait.cumulative[:5] == [0, 1, 1, 2, 2]  # le 0.1, 0.25, 0.5, 1, 2.5
    assert snap.run.cumulative[metric_rollups.RUN_BUCKETS.index(1)] == 2
    assert snap.run.cumulative[metric_rollups.RUN_BUCKETS.index(5)] == 2
    assert snap.run.cumulative[metric_rollups.RUN_BUCKETS.index(10)] == 3
    assert set(snap.stages) == {"warping", "encode"}  # "odd" is not a timing
    assert (snap.stages["warping"].count, snap.stages["warping"].total) == (2, pytest.approx(2.3))
    assert snap.deliveries_by_state == {"pending": 0, "delivered": 2, "failed": 0}
    assert snap.attempts_by_outcome == {"delivered": 2, "http_error": 2, "error": 2, "running": 2}


def _payload() -> dict[str, Any]:
    return {"image_url": "http://127.0.0.1:9/x.jpg"}


def _new_requests(scratch: Scratch, n: int, **values: Any) -> list[uuid.UUID]:
    return insert_requests(n, app_id=APP, payload=_payload(), database_url=scratch.url, **values)


def _run_to_completion(scratch: Scratch, request_id: uuid.UUID, ok: bool) -> None:
    with scratch.scope() as session:
        claimed = claim(session, request_id, worker=f"w:{threading.get_ident()}", lease_s=60)
        assert claimed is not None
    with scratch.scope() as session:
        if ok:
            assert complete_ok(
                session, request_id, claimed.attempts, output={"image": {}}, metrics={"stages": STAGES}
            )
        else:
            assert complete_failed(session, request_id, failures.internal(), attempt=claimed.attempts)


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0)
        for k in after.keys() | before.keys()
        if after.get(k, 0) != before.get(k, 0)
    }


def test_concurrent_completions_sum_exactly(scratch: Scratch) -> None:
    per_thread, threads = 6, 8
    ids = _new_requests(scratch, per_thread * threads)
    # The reconciler fails a batch of late requests in one transaction meanwhile: many
    # completions in one commit, racing the single ones on the same counters.
    late = _new_requests(scratch, 30, start_deadline=utcnow() - timedelta(seconds=1))
    before = scratch.snapshot()
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def complete(chunk: list[uuid.UUID]) -> None:
        try:
            barrier.wait()
            for i, request_id in enumerate(chunk):
                _run_to_completion(scratch, request_id, ok=i % 2 == 0)
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    def expire() -> None:
        try:
            barrier.wait()
            with scratch.scope() as session:
                assert expire_unstarted(session, failures.start_timeout()) == len(late)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=complete, args=(ids[i::threads],)) for i in range(threads)]
    workers.append(threading.Thread(target=expire))
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert not errors, errors

    after = scratch.snapshot()
    half = per_thread * threads // 2
    outcomes = _delta(after.completed_by_outcome, before.completed_by_outcome)
    assert outcomes == {"ok": half, "request_timeout": 30, "internal_error": half}
    assert after.by_status["COMPLETED"] - before.by_status["COMPLETED"] == 2 * half + 30
    assert after.wait.count - before.wait.count == 2 * half
    assert after.run.count - before.run.count == 2 * half
    for stage, seconds in STAGES.items():
        grown = after.stages[stage]
        old = before.stages.get(
            stage, metric_rollups.Histogram([0] * len(metric_rollups.STAGE_BUCKETS), 0, 0.0)
        )
        assert grown.count - old.count == half
        assert grown.total - old.total == pytest.approx(half * seconds)
    with scratch.scope() as session:
        run_s = session.execute(
            text(
                "SELECT sum(EXTRACT(EPOCH FROM finished_at - started_at))::float8"
                " FROM requests WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        ).scalar_one()
        shards = session.execute(text("SELECT count(DISTINCT shard) FROM metric_rollups")).scalar_one()
    assert after.run.total - before.run.total == pytest.approx(run_s, abs=1e-6)
    assert shards > 1  # the completions spread over shards rather than queueing on one row


def test_a_rolled_back_completion_counts_nothing(scratch: Scratch) -> None:
    (request_id,) = _new_requests(scratch, 1)
    before = scratch.snapshot()
    session = scratch.factory()
    try:
        assert complete_failed(session, request_id, failures.cancelled())
        session.rollback()
        # The same session's next transaction does not carry the increments over.
        session.execute(text("SELECT 1"))
        session.commit()
    finally:
        session.close()
    after = scratch.snapshot()
    assert after.completed_by_outcome == before.completed_by_outcome
    assert after.by_status == before.by_status


def _delivery(scratch: Scratch) -> uuid.UUID:
    (request_id,) = _new_requests(scratch, 1)
    with scratch.scope() as session:
        assert complete_failed(session, request_id, failures.cancelled())
        delivery = WebhookDelivery(
            request_id=request_id,
            url="http://127.0.0.1:9/hook",
            user_id="u",
            body="{}",
            state=DeliveryState.PENDING.value,
            next_attempt_at=utcnow(),
            created_at=utcnow(),
        )
        session.add(delivery)
        session.flush()
        return delivery.id


def test_webhook_attempts_and_delivery_states(scratch: Scratch) -> None:
    delivery_id = _delivery(scratch)
    start = scratch.snapshot()

    def moved() -> tuple[dict[str, int], dict[str, int]]:
        now = scratch.snapshot()
        return (
            _delta(now.attempts_by_outcome, start.attempts_by_outcome),
            _delta(now.deliveries_by_state, start.deliveries_by_state),
        )

    with scratch.scope() as session:
        first = claim_attempt(session, delivery_id, lease_s=0)
    assert first is not None
    assert moved() == ({"running": 1}, {})
    # Its dispatcher is presumed lost: the next claim closes it as an `error`.
    with scratch.scope() as session:
        second = claim_attempt(session, delivery_id, lease_s=60)
    assert second is not None
    assert moved() == ({"running": 1, "error": 1}, {})
    # The lost one answers after all: the delivery is delivered, the attempt not counted twice.
    with scratch.scope() as session:
        finish_attempt(session, first, Outcome(200, None), retry_delays=(), publish_within_s=0)
    assert moved() == ({"running": 1, "error": 1}, {"pending": -1, "delivered": 1})
    with scratch.scope() as session:
        finish_attempt(session, second, Outcome(500, "HTTP 500"), retry_delays=(), publish_within_s=0)
    assert moved() == ({"error": 1, "http_error": 1}, {"pending": -1, "delivered": 1})
    # A redelivery leaves `delivered`; its one attempt fails for good.
    with scratch.scope() as session:
        assert restart(session, delivery_id)
        assert not restart(session, delivery_id)
    assert moved() == ({"error": 1, "http_error": 1}, {})
    with scratch.scope() as session:
        third = claim_attempt(session, delivery_id, lease_s=60)
        assert third is not None
        finish_attempt(session, third, Outcome(None, "refused"), retry_delays=(), publish_within_s=0)
    assert moved() == ({"error": 2, "http_error": 1}, {"pending": -1, "failed": 1})


def test_deleting_finished_rows_keeps_the_counters(scratch: Scratch) -> None:
    before = scratch.snapshot()
    with scratch.scope() as session:
        # What the retention sweep does: the finished rows go with their deliveries (and, by
        # cascade, attempts), and the numbers that left are passed on in the same transaction.
        states = session.execute(
            text(
                "DELETE FROM webhook_deliveries d USING requests r WHERE d.request_id = r.id"
                " AND r.status = 'COMPLETED' RETURNING d.state"
            )
        ).scalars()
        by_state: dict[str, int] = {}
        for state in states:
            by_state[state] = by_state.get(state, 0) + 1
        deleted = session.execute(text("DELETE FROM requests WHERE status = 'COMPLETED' RETURNING id")).all()
        metric_rollups.record_deleted(session, requests=len(deleted), deliveries_by_state=by_state)
    assert deleted and by_state
    after = scratch.snapshot()
    assert after.completed_by_outcome == before.completed_by_outcome
    assert (after.wait, after.run, after.stages) == (before.wait, before.run, before.stages)
    assert {k: v for k, v in after.attempts_by_outcome.items() if k != "running"} == {
        k: v for k, v in before.attempts_by_outcome.items() if k != "running"
    }
    assert after.by_status["COMPLETED"] == 0
    assert after.by_status["IN_QUEUE"] == before.by_status["IN_QUEUE"]
    assert after.deliveries_by_state == {"pending": 0, "delivered": 0, "failed": 0}
    assert after.attempts_by_outcome["running"] == 0


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows that the plan's scans touched: those they returned and those they filtered out."""
    own = 0
    if "Scan" in plan["Node Type"]:
        loops = int(plan.get("Actual Loops", 1))
        touched = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        own = int(touched * loops) + int(plan.get("Rows Removed by Index Recheck", 0))
    return own + sum(_rows_read(child) for child in plan.get("Plans", []))


def _scans(plan: dict[str, Any]) -> list[str]:
    here = [f"{plan['Node Type']}({plan.get('Index Name', plan.get('Relation Name', ''))})"]
    return [*here, *(scan for child in plan.get("Plans", []) for scan in _scans(child))]


_BULK_HISTORY = """
INSERT INTO requests (id, app_id, status, priority, input, queued_at, started_at, finished_at,
                      metrics, webhook_url, result_expires_at)
SELECT gen_random_uuid(), 'bulk', 'COMPLETED', n % 2, '{"image_url": "http://127.0.0.1:9/x.jpg"}',
       now() - interval '2 days', now() - interval '2 days' + interval '1 s',
       now() - interval '2 days' + interval '3 s', '{"stages": {"warping": 0.3}}', 'http://h/x',
       now() - interval '1 day'
FROM generate_series(1, :n) AS n;
"""
_BULK_DELIVERIES = """
INSERT INTO webhook_deliveries (id, request_id, url, user_id, body, state, next_attempt_at, created_at,
                                finished_at)
SELECT gen_random_uuid(), id, webhook_url, 'u', '{}', 'delivered', finished_at, finished_at, finished_at
FROM requests WHERE app_id = 'bulk';
INSERT INTO webhook_attempts (delivery_id, number, started_at, finished_at, status_code)
SELECT id, 1, finished_at, finished_at, 200 FROM webhook_deliveries;
"""


def test_the_scrape_reads_no_finished_row(scratch: Scratch) -> None:
    before = scratch.snapshot()
    with scratch.scope() as session:
        session.execute(text(_BULK_HISTORY), {"n": 50_000})
        session.execute(text(_BULK_DELIVERIES))
    # A little unfinished work, as a live system has.
    waiting = _new_requests(scratch, 5)
    running = _new_requests(scratch, 3)
    for request_id in running:
        with scratch.scope() as session:
            assert claim(session, request_id, worker=f"w{request_id.hex[:4]}", lease_s=60) is not None
    _delivery(scratch)
    with scratch.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(
            text("VACUUM ANALYZE requests, webhook_deliveries, webhook_attempts, metric_rollups")
        )

    with scratch.scope() as session:
        for query in (*metrics_queries.GAUGE_QUERIES, metric_rollups.READ):
            explained = session.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {query.text}")).scalar_one()
            plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
            read = _rows_read(plan)
            print(f"{read} rows read: {' '.join(_scans(plan))} <- {query.text[:60]}")
            # Unfinished rows and rollup rows only: tens, against 50,000 finished rows.
            assert read < 1_000, (query.text, read, json.dumps(plan, indent=1))

    snap = scratch.snapshot()
    assert snap.by_status["IN_QUEUE"] - before.by_status["IN_QUEUE"] == len(waiting)
    assert snap.by_status["IN_PROGRESS"] - before.by_status["IN_PROGRESS"] == len(running)
    assert snap.busy_workers - before.busy_workers == len(running)
    assert snap.deliveries_by_state["pending"] - before.deliveries_by_state["pending"] == 1
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        scratch.snapshot()
        timings.append(time.perf_counter() - started)
    print(
        f"scrape's database part at 50,000 finished rows: median {statistics.median(timings) * 1000:.2f} ms"
    )
