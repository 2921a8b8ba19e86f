"""Months of history: finished rows are deleted after ROW_RETENTION_S by every API replica
sweeping together, and no call on a request path reads the finished history.

The service here has two API replicas that sweep every 0.3 s with short retentions, and one worker.
The per-call costs are measured with EXPLAIN ANALYZE of the production statements against a
table that holds tens of thousands of finished rows: each may read only a handful of rows.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from core import failures, idempotency
from core.clock import utcnow
from core.db_async import setup_connection
from core.requests_table import api_statements as request_queries
from core.requests_table import (
    cancel,
    claim_unforgotten_inputs,
    claim_waiting,
    expire_unstarted,
    fail_no_retry_expired,
    fail_no_retry_of_worker,
    find_stale,
    key_limits,
    queue_length,
    retention,
)
from core.requests_table.position_board import _ORDER
from core.webhook_outbox import find_due
from stack.servers import LocalStack
from storage.layout import INPUT_REF_PREFIX, INPUTS, OUTPUTS, input_key, input_ref, output_key
from tests.support.harness import Service, base_env, pg_url, result, s3_client, status, submit, wait_for

RESULT_RETENTION_S = 2
ROW_RETENTION_S = 4
HISTORY_ROWS = 40_000
KEY = "history-key"
# Rows a request-path statement may read (index entries fetched or rows filtered out) while the
# table holds HISTORY_ROWS finished rows: a scan of the history would read tens of thousands.
MAX_ROWS_READ = 50


@pytest.fixture(scope="module")
def history(migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path) -> Iterator[Service]:
    """The service; its first API's base URL is `history.env["BASE"]`."""
    env = base_env(
        migrated_stack,
        fault_weights,
        FAULT_STAGE_DELAY_S="0",
        RESULT_RETENTION_S=str(RESULT_RETENTION_S),
        ROW_RETENTION_S=str(ROW_RETENTION_S),
        RETENTION_SWEEP_INTERVAL_S="0.3",
        SWEEP_BATCH_SIZE="250",
        # The waiting row planted below has no broker message: it must stay waiting.
        REPUBLISH_AFTER_S="600",
    )
    svc = Service(env, fault_logs / "history")
    svc.logs.mkdir(exist_ok=True)
    try:
        svc.env["BASE"] = svc.api("api-a")
        svc.api("api-b")
        svc.worker("history-worker")
        yield svc
    finally:
        svc.close()


def _sql(svc: Service, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url(svc.env), autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def test_a_finished_request_answers_410_then_404(history: Service) -> None:
    base = history.env["BASE"]
    request_id = submit(base).json()["request_id"]
    done = wait_for(lambda: (r := result(base, request_id)).status_code == 200 and r, 120, "the result")
    assert done.json()["image"]["url"]
    expired = wait_for(lambda: (r := result(base, request_id)).status_code == 410 and r, 30, "expiry")
    assert expired.json()["error_type"] == "result_expired"
    # The row stays until ROW_RETENTION_S after the end; then the request is unknown.
    assert status(base, request_id).json()["status"] == "COMPLETED"
    gone = wait_for(lambda: (r := result(base, request_id)).status_code == 404 and r, 30, "row deletion")
    assert "detail" in gone.json()
    assert status(base, request_id).status_code == 404
    assert _sql(history, "SELECT count(*) FROM requests WHERE id = %s", (request_id,)) == [(0,)]


def _fill_due(svc: Service, count: int) -> None:
    """`count` rows that ended long ago (their results and rows due), each with an output
    object name, a tenth with a delivered webhook and its attempts."""
    _sql(
        svc,
        """
        INSERT INTO requests (id, app_id, status, priority, input, owner_key_id, queued_at,
                              started_at, finished_at, result_expires_at, attempts, logs, output)
        SELECT gen_random_uuid(), 'fal-ai/live-portrait/image', 'COMPLETED', 0,
               jsonb_build_object('image_url', 'https://example.com/a.png'), 'sweep-test',
               now() - interval '2 days', now() - interval '2 days', now() - interval '1 day',
               now() - interval '1 day', 1, '[]'::jsonb,
               jsonb_build_object('image', jsonb_build_object('file_name', 'o' || g || '.png'))
        FROM generate_series(1, %s) g
        """,
        (count,),
    )
    _sql(
        svc,
        """
        WITH picked AS (SELECT id FROM requests WHERE owner_key_id = 'sweep-test' LIMIT %s),
        d AS (
            INSERT INTO webhook_deliveries (id, request_id, url, user_id, body, state, attempts,
                                            round_attempts, next_attempt_at, created_at, finished_at)
            SELECT gen_random_uuid(), id, 'https://example.com/hook', 'u', '{}', 'delivered', 1, 1,
                   now(), now(), now() FROM picked
            RETURNING id)
        INSERT INTO webhook_attempts (delivery_id, number, started_at, finished_at, status_code)
        SELECT id, 1, now(), now(), 200 FROM d
        """,
        (count // 10,),
    )


def _sweep_counts(svc: Service) -> tuple[int, int, int]:
    """(results expired, rows deleted, failed rounds) summed over both replicas' JSON logs."""
    expired = deleted = failed = 0
    for name in ("api-a", "api-b"):
        for line in svc.children[name].log_text().splitlines():
            try:
                message = str(json.loads(line).get("message", ""))
            except (ValueError, AttributeError):
                continue
            if message.startswith("retention sweep: "):
                words = message.split()
                expired += int(words[2])
                deleted += int(words[5])
            elif message.startswith("retention sweep failed"):
                failed += 1
    return expired, deleted, failed


def test_two_replicas_sweep_a_backlog_once_and_keep_what_is_unfinished(history: Service) -> None:
    before = _sweep_counts(history)
    # Unfinished rows as old as the backlog: never deleted, whatever their age.
    keep = [str(uuid.uuid4()) for _ in range(3)]
    _sql(
        history,
        """
        INSERT INTO requests (id, app_id, status, priority, input, queued_at, started_at,
                              lease_expires_at, published_at, attempts, logs)
        VALUES (%s, 'fal-ai/live-portrait/image', 'IN_PROGRESS', 0, '{}', now() - interval '9 days',
                now() - interval '9 days', now() + interval '1 hour', now(), 1, '[]'),
               (%s, 'fal-ai/live-portrait/image', 'IN_QUEUE', 1, '{}', now() - interval '9 days',
                NULL, NULL, now(), 0, '[]')
        """,
        (keep[0], keep[1]),
    )
    # A finished row whose webhook is still pending keeps its row (its result still expires).
    _sql(
        history,
        """
        WITH r AS (
            INSERT INTO requests (id, app_id, status, priority, input, queued_at, finished_at,
                                  result_expires_at, attempts, logs)
            VALUES (%s, 'fal-ai/live-portrait/image', 'COMPLETED', 0, '{}', now() - interval '9 days',
                    now() - interval '9 days', now() - interval '9 days', 1, '[]') RETURNING id)
        INSERT INTO webhook_deliveries (id, request_id, url, user_id, body, state, attempts,
                                        round_attempts, next_attempt_at, created_at)
        SELECT gen_random_uuid(), id, 'https://example.com/hook', 'u', '{}', 'pending', 0, 0,
               now() + interval '1 hour', now() FROM r
        """,
        (keep[2],),
    )
    count = 3000
    _fill_due(history, count)
    started = time.monotonic()

    def swept() -> bool:
        left = _sql(history, "SELECT count(*) FROM requests WHERE owner_key_id = 'sweep-test'")
        return left == [(0,)]

    wait_for(swept, 120, "the backlog to be swept", every=0.2)
    elapsed = time.monotonic() - started
    time.sleep(1)  # the last round's log line
    expired, deleted, failed = (a - b for a, b in zip(_sweep_counts(history), before, strict=True))
    print(f"two replicas swept {count} rows in {elapsed:.1f} s")
    assert failed == 0
    # Each row was expired once and deleted once, whichever replica took its batch.
    assert expired == count + 1  # + the row with a pending webhook
    assert deleted == count
    assert _sql(
        history,
        "SELECT count(*) FROM webhook_deliveries d WHERE NOT EXISTS"
        " (SELECT 1 FROM requests r WHERE r.id = d.request_id)",
    ) == [(0,)]
    assert _sql(
        history,
        "SELECT count(*) FROM webhook_attempts a WHERE NOT EXISTS"
        " (SELECT 1 FROM webhook_deliveries d WHERE d.id = a.delivery_id)",
    ) == [(0,)]
    kept = _sql(
        history,
        "SELECT id::text, status, expired_at IS NOT NULL FROM requests WHERE id = ANY(%s::uuid[])",
        (keep,),
    )
    assert sorted(kept) == sorted(
        [(keep[0], "IN_PROGRESS", False), (keep[1], "IN_QUEUE", False), (keep[2], "COMPLETED", True)]
    )
    _sql(history, "DELETE FROM requests WHERE id = ANY(%s::uuid[])", (keep,))


def test_the_result_sweep_deletes_output_and_input_objects(history: Service) -> None:
    env = history.env
    s3 = s3_client(env)
    ids = [uuid.uuid4() for _ in range(3)]
    # One plain row, one whose input was stored at submit, one that ran twice (the first run's
    # output, from a lost worker, is found by listing).
    for rid in ids:
        s3.put_object(Bucket=env["S3_BUCKET"], Key=output_key(rid, "out.png"), Body=b"x")
    s3.put_object(Bucket=env["S3_BUCKET"], Key=input_key(ids[1], "image"), Body=b"x")
    s3.put_object(Bucket=env["S3_BUCKET"], Key=output_key(ids[2], "lost-run.png"), Body=b"x")
    for n, rid in enumerate(ids):
        image_url = input_ref(input_key(rid, "image")) if n == 1 else "https://example.com/a.png"
        _sql(
            history,
            """
            INSERT INTO requests (id, app_id, status, priority, input, queued_at, finished_at,
                                  result_expires_at, attempts, logs, output)
            VALUES (%s, 'fal-ai/live-portrait/image', 'COMPLETED', 0, %s, now(), now(),
                    now() + interval '1 second', %s, '[]', '{"image": {"file_name": "out.png"}}')
            """,
            (str(rid), json.dumps({"image_url": image_url}), 2 if n == 2 else 1),
        )

    def objects() -> list[str]:
        found = []
        for prefix in (OUTPUTS, INPUTS):
            listing = s3.list_objects_v2(Bucket=env["S3_BUCKET"], Prefix=prefix)
            found += [o["Key"] for o in listing.get("Contents", []) if any(str(r) in o["Key"] for r in ids)]
        return found

    assert len(objects()) == 5
    wait_for(lambda: not objects(), 30, "the objects to be deleted")
    expired = _sql(
        history,
        "SELECT count(*) FROM requests WHERE id = ANY(%s::uuid[]) AND output IS NULL"
        " AND expired_at IS NOT NULL",
        ([str(r) for r in ids],),
    )
    assert expired in ([(3,)], [(0,)])  # expired, or already deleted with its row


# --- per-call costs ---------------------------------------------------------------------------

_TABLES = {"requests", "webhook_deliveries", "webhook_attempts", "idempotency_keys"}


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows a plan read from our tables: rows returned by their scans plus rows they discarded."""
    read = 0
    if plan.get("Relation Name") in _TABLES:
        loops = int(plan.get("Actual Loops", 1))
        read += int(plan.get("Actual Rows", 0)) * loops
        read += int(plan.get("Rows Removed by Filter", 0)) + int(plan.get("Rows Removed by Index Recheck", 0))
    for child in plan.get("Plans", []):
        read += _rows_read(child)
    return read


def _fill_history(svc: Service) -> None:
    _sql(
        svc,
        """
        INSERT INTO requests (id, app_id, status, priority, input, owner_key_id, queued_at,
                              started_at, finished_at, result_expires_at, expired_at, attempts,
                              logs, published_at, store_io, no_retry, worker)
        SELECT gen_random_uuid(), 'fal-ai/live-portrait/image', 'COMPLETED', g %% 2,
               -- A fifth ended with X-Fal-Store-IO: 0, their input and logs already dropped.
               CASE WHEN g %% 5 <> 0 THEN '{"image_url": "https://example.com/a.png"}'::jsonb END, %s,
               now() - (g * interval '10 seconds'), now() - (g * interval '10 seconds'),
               now() - (g * interval '10 seconds'), now() + interval '30 days',
               CASE WHEN g %% 3 = 0 THEN now() END, 1, CASE WHEN g %% 5 <> 0 THEN '[]'::jsonb END,
               now() - (g * interval '10 seconds'), g %% 5 <> 0, g %% 2 = 0, 'host:1'
        FROM generate_series(1, %s) g
        """,
        (KEY, HISTORY_ROWS),
    )
    _sql(svc, "ANALYZE requests")
    _sql(svc, "ANALYZE webhook_deliveries")


def _explain_async(svc: Service, statement: str, *args: Any) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(pg_url(svc.env))
        await setup_connection(conn)  # the API pool's JSON codecs
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                raw = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, *args)
            finally:
                await transaction.rollback()
        finally:
            await conn.close()
        return _rows_read(raw[0]["Plan"])

    return asyncio.run(run())


def _explain_captured(svc: Service, action: Callable[[Session], object]) -> dict[str, int]:
    """Run `action` (a production function) in a rolled-back transaction, then EXPLAIN ANALYZE
    every statement it ran, with its parameters; returns rows read per statement."""
    engine = create_engine(svc.env["DATABASE_URL"])
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    out: dict[str, int] = {}
    try:
        with Session(engine) as session:
            action(session)
            session.rollback()
            for statement, parameters in list(captured):
                raw = (
                    session.connection()
                    .exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
                    .scalar_one()
                )
                plan = raw if isinstance(raw, list) else json.loads(raw)
                out[" ".join(statement.split())[:90]] = _rows_read(plan[0]["Plan"])
            session.rollback()
    finally:
        engine.dispose()
    return out


def test_request_paths_read_no_history(history: Service) -> None:
    _fill_history(history)
    some_id = uuid.UUID(
        _sql(history, "SELECT id::text FROM requests WHERE owner_key_id = %s LIMIT 1", (KEY,))[0][0]
    )
    cap = 1000
    costs: dict[str, int] = {
        "submit (insert + position)": _explain_async(
            history,
            request_queries._INSERT,
            uuid.uuid4(),
            "fal-ai/live-portrait/image",
            0,
            {"image_url": "x"},
            None,
            None,
            KEY,
            None,
            utcnow(),
            cap,
            False,
            True,
        ),
        "submit's ?fal_max_queue_length=10": _explain_async(
            history, queue_length._WAITING_UP_TO, "fal-ai/live-portrait/image", 11
        ),
        "status/result/stream (fetch)": _explain_async(history, request_queries._FETCH, some_id, True, cap),
        "key in flight": _explain_async(history, key_limits.IN_FLIGHT_SQL, KEY),
        "key submits per minute": _explain_async(
            history, key_limits.RECENT_SQL, KEY, utcnow() - timedelta(seconds=60)
        ),
        "position board": _explain_async(history, _ORDER),
        "submit's Idempotency-Key lookup": _explain_async(
            history, idempotency.LOOKUP_SQL, KEY, "explain-key", utcnow()
        ),
        "submit's Idempotency-Key claim": _explain_async(
            history,
            idempotency.CLAIM_SQL,
            KEY,
            "explain-key",
            b"\0" * 32,
            some_id,
            utcnow(),
            utcnow() + timedelta(days=1),
        ),
    }
    captured = _explain_captured(
        history,
        lambda s: (
            find_stale(s, publish_grace_s=2, republish_after_s=600),
            expire_unstarted(s, failures.start_timeout()),
            find_due(s, republish_after_s=600),
            claim_waiting(s, worker="explain", lease_s=60, max_attempts=3, limit=4),
            retention.claim_due_results(s, 1000, input_ref_prefix=INPUT_REF_PREFIX),
            retention.delete_rows(s, ROW_RETENTION_S * 10**6, 1000),
            cancel(s, some_id, failures.cancelled()),
            idempotency.delete_expired(s, 1000),
            claim_unforgotten_inputs(s, 1000, input_ref_prefix=INPUT_REF_PREFIX),
            fail_no_retry_of_worker(s, "host:1", failures.runner_disconnected()),
            fail_no_retry_expired(s, uuid.uuid4(), failures.runner_disconnected()),
        ),
    )
    costs.update({f"reconciler/sweep: {k}": v for k, v in captured.items()})
    print(json.dumps(costs, indent=1))
    assert len(captured) >= 11  # statements that share their first 90 characters count once
    assert all(read <= MAX_ROWS_READ for read in costs.values()), costs


def test_queue_length_check_reads_at_most_the_limit(history: Service) -> None:
    """?fal_max_queue_length against a backlog far longer than its limit, behind another
    endpoint's older backlog (and the history above): the count stops at limit + 1 rows."""
    backlog, limit = 20_000, 10

    async def run() -> tuple[int, int, str]:
        conn = await asyncpg.connect(pg_url(history.env))
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                for app_id, age_s in (("explain/other", 60), ("explain/backlog", 0)):
                    await conn.execute(
                        "INSERT INTO requests (id, app_id, status, priority, input, queued_at, logs)"
                        " SELECT gen_random_uuid(), $2, 'IN_QUEUE', 0, '{}',"
                        " now() - make_interval(secs => $3), '[]' FROM generate_series(1, $1)",
                        backlog,
                        app_id,
                        float(age_s),
                    )
                await conn.execute("ANALYZE requests")
                waiting = await conn.fetchval(queue_length._WAITING_UP_TO, "explain/backlog", limit + 1)
                raw = await conn.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + queue_length._WAITING_UP_TO,
                    "explain/backlog",
                    limit + 1,
                )
            finally:
                await transaction.rollback()
        finally:
            await conn.close()
        plan = json.loads(raw) if isinstance(raw, str) else raw
        return waiting, _rows_read(plan[0]["Plan"]), json.dumps(plan)

    waiting, read, plan = asyncio.run(run())
    assert waiting == limit + 1  # more than the limit: the submit would be refused
    nodes = re.findall(r'"(?:Node Type|Index Name)": "([^"]*)"', plan)
    assert read <= limit + 1, nodes
