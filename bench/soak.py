"""`make soak`: the API's latency on an empty table and on a long history, and the sweeps' rates.

A benchmark, not a test. Starts its own stack with durable writes, as `make run` does
(PostgreSQL, Redis and S3 under a temporary directory, migrations, one API process with
AUTH_MODE=keys and one key), and no edit worker: submitted requests stay waiting, so the figures
are about the API alone. The per-key limits are set high enough never to refuse, but they run.

  A. empty table: submit, status, result and /metrics latency (p50, p99 over sequential calls);
  fill: N finished requests of that key (SOAK_ROWS, default 1,000,000), webhook deliveries with
     one attempt each for a tenth of them, inserted in SQL batches, then VACUUM ANALYZE;
  B. at N rows: the same measurements;
  C. the sweeps on a backlog, each timed draining it: result expiry (some rows with real output
     objects in S3), row deletion (rows with and without deliveries), the upload sweep.

The API's own sweeps are off during A and B (RETENTION_SWEEP_INTERVAL_S=0,
UPLOAD_SWEEP_INTERVAL_S=0); phase C runs the sweeps' functions in this process. Prints a table
and, last, one JSON line.

    python bench/soak.py [--rows N] [--calls 400] [--metrics-calls 100] [--result-backlog 50000]
        [--row-backlog 50000] [--uploads 5000] [--output-objects 3000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import percentile  # noqa: E402
from bench.service import portrait_png, serve_file  # noqa: E402
from stack.servers import LocalStack  # noqa: E402
from tests.service.processes import start_api  # noqa: E402

APP = "fal-ai/live-portrait/image"
REQUESTS = "fal-ai/live-portrait"
DAY_S = 24 * 3600
SPREAD_S = 6 * DAY_S  # the filled rows finished over the last six days
STAGES = ("detect", "crop", "appearance", "motion", "pasteback", "decode", "encode")
# Targets at 10 million rows (issue 08), all against the empty table.
RATIO_TARGETS = {
    "submit_p50": 1.5,
    "submit_p99": 2.0,
    "status_p50": 1.5,
    "status_p99": 1.5,
    "result_p50": 1.5,
    "result_p99": 1.5,
}
METRICS_TARGET_MS = 50.0
SWEEP_TARGET_PER_S = 1000.0

# One chunk of the fill: rows lo..hi of the series. Everything about row i derives from i (its id
# is md5(seed || i)), so the three inserts agree without a join and the bench can name any row.
_FILL_REQUESTS = """
INSERT INTO requests (id, app_id, status, priority, input, webhook_url, owner_key_id, retention_s,
    result_expires_at, expired_at, queued_at, published_at, started_at, finished_at, worker,
    attempts, cancel_requested, logs, output, metrics)
SELECT id, %(app)s, 'COMPLETED', 0,
    jsonb_build_object('image_url', 'https://images.example.com/portraits/' || i || '.jpg',
                       'smile', 0.5, 'blink', 0.1),
    CASE WHEN i %% 10 = 0 THEN 'https://hooks.example.com/fal/' || %(key)s END,
    %(key)s, NULL,
    CASE WHEN expired THEN finished + interval '1 hour' ELSE finished + interval '30 days' END,
    CASE WHEN expired THEN finished + interval '1 hour' END,
    queued, queued + interval '2 ms', started, finished,
    'celery@soak-worker-' || (i %% 4), 1, false,
    -- JSON written as text and cast once: half the cost of building it with jsonb_build_object.
    ('[{"message": "fetching the input image", "level": "INFO", "source": "USER", "timestamp": '
     || to_json(started) || '}, {"message": "input image: JPEG 512x512, 48213 bytes", "level": "INFO",'
     || ' "source": "USER", "timestamp": ' || to_json(started + interval '40 ms') || '}, {"message":'
     || ' "editing", "level": "INFO", "source": "USER", "timestamp": '
     || to_json(started + interval '45 ms') || '}, {"message": "output stored: 512x512 image/jpeg",'
     || ' "level": "INFO", "source": "USER", "timestamp": ' || to_json(finished) || '}]')::jsonb,
    CASE WHEN NOT expired THEN ('{"image": {"url": "' || %(s3)s || '/outputs/' || id || '/' || file_name
        || '?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=604800&X-Amz-Signature=' || md5(file_name)
        || md5(id::text) || '", "content_type": "image/jpeg", "file_name": "' || file_name
        || '", "file_size": ' || 40000 + i %% 9000 || ', "width": 512, "height": 512}}')::jsonb END,
    ('{"inference_time": ' || run_s - 0.05 || ', "stages": {"detect": 0.021, "crop": 0.004,'
     || ' "appearance": ' || round(run_s * 0.2, 4) || ', "motion": ' || round(run_s * 0.1, 4)
     || ', "pasteback": 0.012, "decode": ' || round(run_s * 0.5, 4) || ', "encode": 0.006}}')::jsonb
FROM (
    SELECT i, id, expired, queued, started, started + run_s * interval '1 second' AS finished, run_s,
           substr(md5('f' || i), 1, 12) || '.jpg' AS file_name
    FROM (
        SELECT i, md5(%(seed)s || i)::uuid AS id, i %% 5 = 1 AS expired,
               %(t0)s - (i::float8 / %(n)s) * %(spread)s * interval '1 second' AS queued,
               %(t0)s - (i::float8 / %(n)s) * %(spread)s * interval '1 second'
                   + (i %% 997) * interval '1 ms' AS started,
               1.0 + (i %% 1499) / 1000.0 AS run_s
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
    ) s
) r
ORDER BY id  -- in index order: each chunk walks the primary key once instead of at random
"""

# Deliveries for every tenth row, each with its one (successful) attempt.
_FILL_DELIVERIES = """
WITH d AS (
    INSERT INTO webhook_deliveries (id, request_id, url, user_id, body, state, attempts,
        round_attempts, next_attempt_at, created_at, finished_at, last_status_code)
    SELECT md5('d' || %(seed)s || i)::uuid, rid,
        'https://hooks.example.com/fal/' || %(key)s, 'portrait-queue',
        '{"request_id": "' || rid || '", "gateway_request_id": "' || rid
            || '", "status": "OK", "payload": {"image": {"url": "' || %(s3)s || '/outputs/' || rid
            || '/' || substr(md5('f' || i), 1, 12) || '.jpg", "content_type": "image/jpeg",'
            || ' "file_size": 41234, "width": 512, "height": 512}}}',
        'delivered', 1, 1, finished, finished, finished + interval '80 ms', 200
    FROM (
        SELECT i, md5(%(seed)s || i)::uuid AS rid,
               %(t0)s - (i::float8 / %(n)s) * %(spread)s * interval '1 second'
                   + (i %% 997) * interval '1 ms'
                   + (1.0 + (i %% 1499) / 1000.0) * interval '1 second' AS finished
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
        WHERE i %% 10 = 0
    ) s
    RETURNING id, created_at, finished_at
)
INSERT INTO webhook_attempts (delivery_id, number, started_at, finished_at, status_code)
SELECT id, 1, created_at + interval '5 ms', finished_at, 200 FROM d
"""


def row_id(seed: str, i: int) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"{seed}{i}".encode()).hexdigest())


def file_name_of(i: int) -> str:
    return hashlib.md5(f"f{i}".encode()).hexdigest()[:12] + ".jpg"


class Soak:
    def __init__(
        self, args: argparse.Namespace, env: dict[str, str], base: str, key: str, key_id: str, image_url: str
    ) -> None:
        self.args = args
        self.env = env
        self.base = base
        self.key_id = key_id
        self.headers = {"Authorization": f"Key {key}"}
        self.payload = {"image_url": image_url, "smile": 0.5}
        self.dsn = env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        self.seed = uuid.uuid4().hex[:8]
        self.t0 = datetime.now(UTC)
        self.results: dict[str, Any] = {"rows": args.rows, "machine": f"{os.cpu_count()} CPUs"}

    # -- the API's latency ------------------------------------------------------------------

    def timed_calls(
        self,
        call: Callable[[httpx.Client, int], httpx.Response],
        count: int,
        budget_s: float | None = None,
        warmup: int = 10,
    ) -> list[float]:
        """Latency (ms) of `count` sequential calls on one keep-alive connection; stops early,
        after at least 10 calls, once `budget_s` is spent."""
        latencies: list[float] = []
        with httpx.Client(timeout=120, headers=self.headers) as client:
            for n in range(warmup):
                call(client, n).raise_for_status()
            started = time.monotonic()
            for n in range(count):
                t = time.perf_counter()
                resp = call(client, n)
                latencies.append((time.perf_counter() - t) * 1000)
                if resp.status_code >= 300:
                    raise RuntimeError(f"{resp.request.url}: {resp.status_code} {resp.text[:300]}")
                if budget_s is not None and n >= 9 and time.monotonic() - started > budget_s:
                    break
        return latencies

    def finish_own_submits(self) -> int:
        """Mark this bench's waiting submits finished (nobody runs them) and drop their broker
        messages, so that the waiting backlog stays the same from one measurement to the next."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(
                "UPDATE requests SET status = 'COMPLETED', started_at = now(), finished_at = now(),"
                " result_expires_at = now() + interval '30 days', worker = 'soak',"
                " output = jsonb_build_object('image', jsonb_build_object('url', 'http://127.0.0.1/x.jpg',"
                " 'content_type', 'image/jpeg', 'file_name', 'x.jpg', 'file_size', 1, 'width', 1,"
                " 'height', 1)), metrics = '{\"inference_time\": 1.0}'::jsonb"
                " WHERE owner_key_id = %s AND status <> 'COMPLETED'",
                (self.key_id,),
            )
            done = cur.rowcount
        import redis

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        queue = self.env["QUEUE_NAME"]
        client.delete(queue, f"{queue}.normal", f"{queue}.low")
        client.close()
        return done

    def measure(self, label: str, ids: list[uuid.UUID]) -> dict[str, list[float]]:
        calls, out = self.args.calls, {}
        print(f"[{label}] submit: {calls} sequential calls, in rounds of 100 ...", flush=True)
        self.finish_own_submits()
        submit_ms: list[float] = []
        for _ in range(max(1, calls // 100)):
            submit_ms += self.timed_calls(lambda c, _n: c.post(f"{self.base}/{APP}", json=self.payload), 100)
            self.finish_own_submits()
        out["submit"] = submit_ms
        if not ids:  # the empty table: this bench's own submits, finished, are the rows to read
            with psycopg.connect(self.dsn) as conn:
                ids = [
                    r[0]
                    for r in conn.execute("SELECT id FROM requests WHERE owner_key_id = %s", (self.key_id,))
                ]
        print(f"[{label}] status, result: {calls} sequential calls each ...", flush=True)
        out["status"] = self.timed_calls(
            lambda c, n: c.get(f"{self.base}/{REQUESTS}/requests/{ids[n % len(ids)]}/status"), calls
        )
        out["result"] = self.timed_calls(
            lambda c, n: c.get(f"{self.base}/{REQUESTS}/requests/{ids[n % len(ids)]}"), calls
        )
        print(f"[{label}] /metrics: up to {self.args.metrics_calls} calls (at most 120 s) ...", flush=True)
        out["metrics"] = self.timed_calls(
            lambda c, _n: c.get(f"{self.base}/metrics"), self.args.metrics_calls, budget_s=120, warmup=2
        )
        for name, values in out.items():
            print(
                f"    {name:<8} n={len(values):<5} p50 {percentile(values, 0.5):9.2f} ms"
                f"  p99 {percentile(values, 0.99):9.2f} ms"
            )
        return out

    def sample_ids(self, count: int) -> list[uuid.UUID]:
        """Ids of filled rows spread over the whole history whose result is still there."""
        step = max(1, self.args.rows // count)
        picks = [i for i in range(0, self.args.rows, step) if i % 5 != 1][:count]
        return [row_id(self.seed, i) for i in picks]

    # -- the fill ----------------------------------------------------------------------------

    def fill(self) -> None:
        n, chunk = self.args.rows, self.args.chunk
        s3 = f"{self.env['S3_ENDPOINT_URL']}/{self.env['S3_BUCKET']}"
        print(
            f"fill: {n:,} finished requests, {n // 10:,} webhook deliveries, chunks of {chunk:,} ...",
            flush=True,
        )
        started = time.monotonic()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # For the fill only: sort each chunk in memory, and checkpoint less often (every
            # checkpoint makes the next write of each index page a full-page image in the WAL).
            conn.execute("SET work_mem = '256MB'")
            conn.execute("SET maintenance_work_mem = '512MB'")
            tuned = self.set_max_wal_size("16GB")
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk) - 1
                params = {
                    "app": APP,
                    "key": self.key_id,
                    "seed": self.seed,
                    "t0": self.t0,
                    "n": n,
                    "spread": SPREAD_S,
                    "lo": lo,
                    "hi": hi,
                    "s3": s3,
                }
                t = time.monotonic()
                with conn.transaction():
                    conn.execute(_FILL_REQUESTS, params)
                    conn.execute(_FILL_DELIVERIES, params)
                rate = (hi - lo + 1) / (time.monotonic() - t)
                print(
                    f"  rows {lo:>11,} .. {hi:>11,}  {rate:9,.0f} rows/s"
                    f"  {time.monotonic() - started:7.1f} s",
                    flush=True,
                )
            insert_s = time.monotonic() - started
            t = time.monotonic()
            conn.execute("VACUUM ANALYZE requests, webhook_deliveries, webhook_attempts")
            vacuum_s = time.monotonic() - t
            if tuned:  # back to the stack's own setting for the measurements
                self.set_max_wal_size(None)
                conn.execute("CHECKPOINT")
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
        self.results.update(
            fill_s=round(insert_s, 1),
            fill_rows_per_s=round(n / insert_s),
            vacuum_analyze_s=round(vacuum_s, 1),
            database_size=size[0] if size else "",
        )
        print(
            f"fill: {insert_s:.1f} s ({n / insert_s:,.0f} rows/s), VACUUM ANALYZE {vacuum_s:.1f} s,"
            f" database {self.results['database_size']}",
            flush=True,
        )

    def set_max_wal_size(self, value: str | None) -> bool:
        """ALTER SYSTEM max_wal_size (None: back to the server's configuration) and reload;
        False where this role may not."""
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                if value is None:
                    conn.execute("ALTER SYSTEM RESET max_wal_size")
                else:
                    conn.execute(f"ALTER SYSTEM SET max_wal_size = '{value}'")
                conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as exc:
            print(f"  (max_wal_size left as it is: {exc})", flush=True)
            return False
        return True

    # -- the sweeps --------------------------------------------------------------------------

    def ids_sql(self, lo: int, count: int, where: str = "true") -> str:
        """A subquery naming filled rows lo.. (count of the series) that satisfy `where` on i."""
        return (
            f"SELECT md5('{self.seed}' || i)::uuid FROM generate_series({lo}, {lo + count - 1}) AS i"
            f" WHERE {where}"
        )

    def sweeps(self) -> None:
        from core.config import get_settings
        from storage import upload_sweep
        from storage.result_sweep import delete_rows_once, drain, expire_results_once
        from storage.s3 import get_store

        settings, store = get_settings(), get_store()
        n, args = self.args.rows, self.args
        # Backlogs from the middle of the history, away from the rows phase B read.
        result_lo = n // 3
        result_n = min(args.result_backlog * 5 // 4 + 5, n // 3)  # a fifth of the series expired
        row_lo = 2 * n // 3
        row_n = min(args.row_backlog + 5, n // 3)

        # Result expiry: rows past their expiry with the result still there, some with objects.
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            due = conn.execute(
                "UPDATE requests SET result_expires_at = now() - interval '1 hour'"
                f" WHERE id IN ({self.ids_sql(result_lo, result_n, 'i % 5 <> 1')})"
                " AND expired_at IS NULL"
            ).rowcount
            conn.execute("ANALYZE requests")
        objects = [i for i in range(result_lo, result_lo + result_n) if i % 5 != 1][: args.output_objects]
        print(
            f"result sweep: {due:,} results due, {len(objects):,} with an output object in S3 ...", flush=True
        )
        put_many(store, (f"outputs/{row_id(self.seed, i)}/{file_name_of(i)}" for i in objects), "image/jpeg")
        t = time.monotonic()
        expired = drain(lambda: expire_results_once(settings, store), settings)
        result_s = time.monotonic() - t
        left = sum(1 for _ in store.keys_under("outputs/"))
        print(
            f"  {expired:,} expired in {result_s:.2f} s: {expired / result_s:,.0f} rows/s"
            f" ({left} output objects left)",
            flush=True,
        )

        # Row deletion: rows whose result expired and that ended beyond ROW_RETENTION_S; a tenth
        # of the series has a delivery (and its attempt), as in the whole table.
        old = timedelta(seconds=settings.row_retention_s + DAY_S)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            due_rows = conn.execute(
                "UPDATE requests SET expired_at = coalesce(expired_at, now() - interval '1 day'),"
                " output = NULL, finished_at = finished_at - %s"
                f" WHERE id IN ({self.ids_sql(row_lo, row_n)})",
                (old,),
            ).rowcount
            deliveries = conn.execute(
                f"SELECT count(*) FROM webhook_deliveries WHERE request_id IN ({self.ids_sql(row_lo, row_n)})"
            ).fetchone()
            conn.execute("ANALYZE requests")
        print(
            f"row sweep: {due_rows:,} rows due, {deliveries[0] if deliveries else 0:,} with a delivery ...",
            flush=True,
        )
        t = time.monotonic()
        deleted = drain(lambda: delete_rows_once(settings), settings)
        row_s = time.monotonic() - t
        print(f"  {deleted:,} deleted in {row_s:.2f} s: {deleted / row_s:,.0f} rows/s", flush=True)

        # Uploads: objects under uploads/, swept with `now` past their retention.
        print(f"upload sweep: {args.uploads:,} objects under uploads/ ...", flush=True)
        put_many(store, (f"uploads/{uuid.uuid4()}/portrait.png" for _ in range(args.uploads)), "image/png")
        later = datetime.now(UTC) + timedelta(seconds=settings.upload_retention_s + DAY_S)
        t = time.monotonic()
        try:
            swept = upload_sweep.sweep_once(store, settings.upload_retention_s, now=later)
        except ClientError as exc:  # reported, so that the other figures still come out
            self.results["upload_sweep_error"] = str(exc)
            print(f"  upload sweep FAILED after {time.monotonic() - t:.2f} s: {exc}", flush=True)
            swept = upload_sweep.SweepResult()
        upload_s = time.monotonic() - t
        print(
            f"  {swept.deleted:,} deleted in {upload_s:.2f} s: {swept.deleted / upload_s:,.0f} objects/s",
            flush=True,
        )
        self.results.update(
            result_sweep_rows=expired,
            result_sweep_objects=len(objects),
            result_sweep_s=round(result_s, 2),
            result_sweep_rows_per_s=round(expired / result_s),
            row_sweep_rows=deleted,
            row_sweep_deliveries=deliveries[0] if deliveries else 0,
            row_sweep_s=round(row_s, 2),
            row_sweep_rows_per_s=round(deleted / row_s),
            upload_sweep_objects=swept.deleted,
            upload_sweep_s=round(upload_s, 2),
            upload_sweep_objects_per_s=round(swept.deleted / upload_s),
        )


def put_many(store: Any, keys: Iterable[str], content_type: str) -> None:
    data = b"\xff\xd8soak" + bytes(200)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put(key, data, content_type), keys))


def summarize(results: dict[str, Any], empty: dict[str, list[float]], full: dict[str, list[float]]) -> None:
    for name in ("submit", "status", "result", "metrics"):
        for q, tag in ((0.5, "p50"), (0.99, "p99")):
            a, b = percentile(empty[name], q), percentile(full[name], q)
            results[f"{name}_{tag}_ms_empty"] = round(a, 2)
            results[f"{name}_{tag}_ms_full"] = round(b, 2)
            results[f"{name}_{tag}_ratio"] = round(b / a, 2)
    met = {f"{k}_ratio_le_{v}": results[f"{k}_ratio"] <= v for k, v in RATIO_TARGETS.items()}
    met["metrics_p50_lt_50ms"] = results["metrics_p50_ms_full"] < METRICS_TARGET_MS
    met["metrics_p99_lt_50ms"] = results["metrics_p99_ms_full"] < METRICS_TARGET_MS
    for sweep in ("result_sweep_rows_per_s", "row_sweep_rows_per_s", "upload_sweep_objects_per_s"):
        if sweep in results:
            met[f"{sweep}_ge_1000"] = results[sweep] >= SWEEP_TARGET_PER_S
    results["targets_met"] = met


def report(r: dict[str, Any]) -> None:
    print(
        f"\nportrait-queue soak ({r['machine']}, one API process, AUTH_MODE=keys,"
        f" {r['rows']:,} rows of one key)"
    )
    print(
        f"fill: {r['fill_s']} s ({r['fill_rows_per_s']:,} rows/s), VACUUM ANALYZE {r['vacuum_analyze_s']} s,"
        f" database {r['database_size']}"
    )
    print(
        f"{'':<10}{'empty p50':>11}{'p99':>10}{'full p50':>11}{'p99':>10}{'ratio p50':>11}{'p99':>8}  target"
    )
    targets = {
        "submit": "p50 <= 1.5x, p99 <= 2x",
        "status": "<= 1.5x",
        "result": "<= 1.5x",
        "metrics": "< 50 ms",
    }
    for name in ("submit", "status", "result", "metrics"):
        print(
            f"{name:<10}{r[f'{name}_p50_ms_empty']:>11.2f}{r[f'{name}_p99_ms_empty']:>10.2f}"
            f"{r[f'{name}_p50_ms_full']:>11.2f}{r[f'{name}_p99_ms_full']:>10.2f}"
            f"{r[f'{name}_p50_ratio']:>10.2f}x{r[f'{name}_p99_ratio']:>7.2f}x  {targets[name]}"
        )
    for label, key, unit in (
        ("result sweep", "result_sweep_rows_per_s", "rows/s"),
        ("row sweep", "row_sweep_rows_per_s", "rows/s"),
        ("upload sweep", "upload_sweep_objects_per_s", "objects/s"),
    ):
        if key in r:
            print(f"{label:<14}{r[key]:>10,} {unit:<10} target >= 1,000")
    missed = [k for k, ok in r["targets_met"].items() if not ok]
    print("targets: all met" if not missed else f"targets missed: {', '.join(missed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("SOAK_ROWS", "1000000")))
    parser.add_argument("--chunk", type=int, default=500_000, help="rows per fill statement")
    parser.add_argument("--calls", type=int, default=400, help="calls per submit/status/result figure")
    parser.add_argument("--metrics-calls", type=int, default=100)
    parser.add_argument("--result-backlog", type=int, default=50_000)
    parser.add_argument("--row-backlog", type=int, default=50_000)
    parser.add_argument("--uploads", type=int, default=5_000)
    parser.add_argument("--output-objects", type=int, default=3_000)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp_name,
        # Durable, as `make run`: fsync on every commit.
        LocalStack(Path(tmp_name) / "stack", persistent=True) as stack,
    ):
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        image, _ = portrait_png()
        env = {
            **stack.env(),
            "AUTH_MODE": "keys",
            "ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
            "QUEUE_NAME": f"soak{uuid.uuid4().hex[:6]}",
            # High enough never to refuse, so that both limit queries run on every submit.
            "KEY_MAX_IN_FLIGHT": "1000000",
            "KEY_MAX_SUBMITS_PER_MINUTE": "1000000",
            "RETENTION_SWEEP_INTERVAL_S": "0",
            "UPLOAD_SWEEP_INTERVAL_S": "0",
            "S3_BUCKET": "portrait-queue",
            "LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)  # this process's Settings (the key, the sweeps) name the same stack
        from core.api_keys import create_key
        from core.migrate import upgrade

        upgrade(env["DATABASE_URL"])
        key_id, secret = create_key("soak")
        api, base = start_api(env, logs)
        try:
            soak = Soak(args, env, base, f"{key_id}:{secret}", key_id, serve_file(image))
            empty = soak.measure("empty table", [])
            soak.finish_own_submits()
            with psycopg.connect(soak.dsn, autocommit=True) as conn:  # phase A's rows leave
                conn.execute("DELETE FROM requests WHERE owner_key_id = %s", (key_id,))
            soak.fill()
            full = soak.measure(f"{args.rows:,} rows", soak.sample_ids(args.calls))
            soak.finish_own_submits()
            soak.sweeps()
        finally:
            api.stop()
    summarize(soak.results, empty, full)
    report(soak.results)
    print(json.dumps(soak.results))


if __name__ == "__main__":
    main()
