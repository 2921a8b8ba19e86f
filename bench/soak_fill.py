"""`make soak`'s fill: N finished requests of one key, as months of production leave them.

Everything about row i derives from i (its id is md5(seed || i)), so the inserts agree without a
join and the benchmark can name any row later (bench/soak.py, bench/soak_sweeps.py).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import psycopg

APP = "fal-ai/live-portrait/image"
DAY_S = 24 * 3600
SPREAD_S = 6 * DAY_S  # the filled rows finished over the last six days

# One chunk of the fill: rows lo..hi of the series. Everything about row i derives from i (its id
# is md5(seed || i)), so the three inserts agree without a join and the bench can name any row.
FILL_REQUESTS = """
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
FILL_DELIVERIES = """
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


# Idempotency-Key entries for the rows of the last day (IDEMPOTENCY_TTL_S, 24 h): what a service
# whose clients send a key on every submit holds; older ones the sweep has deleted.
FILL_KEYS = """
INSERT INTO idempotency_keys (owner, key, fingerprint, request_id, created_at, expires_at)
SELECT %(key)s, 'soak-' || i, decode(md5('k' || i), 'hex'), md5(%(seed)s || i)::uuid, queued,
       queued + interval '1 day'
FROM (
    SELECT i, %(t0)s - (i::float8 / %(n)s) * %(spread)s * interval '1 second' AS queued
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
) s
WHERE queued > %(t0)s - interval '1 day'
"""


def row_id(seed: str, i: int) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"{seed}{i}".encode()).hexdigest())


def file_name_of(i: int) -> str:
    return hashlib.md5(f"f{i}".encode()).hexdigest()[:12] + ".jpg"


def fill(soak: Any) -> None:
    """N finished rows of the soak's key, a tenth with a delivered webhook, the last day's with
    an Idempotency-Key entry, then VACUUM ANALYZE."""
    n, chunk = soak.args.rows, soak.args.chunk
    s3 = f"{soak.env['S3_ENDPOINT_URL']}/{soak.env['S3_BUCKET']}"
    print(
        f"fill: {n:,} finished requests, {n // 10:,} webhook deliveries, {n // 6:,} idempotency keys,"
        f" chunks of {chunk:,} ...",
        flush=True,
    )
    started = time.monotonic()
    with psycopg.connect(soak.dsn, autocommit=True) as conn:
        # For the fill only: sort each chunk in memory, and checkpoint less often (every
        # checkpoint makes the next write of each index page a full-page image in the WAL).
        conn.execute("SET work_mem = '256MB'")
        conn.execute("SET maintenance_work_mem = '512MB'")
        tuned = set_max_wal_size(soak.dsn, "16GB")
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk) - 1
            params = {
                "app": APP,
                "key": soak.key_id,
                "seed": soak.seed,
                "t0": soak.t0,
                "n": n,
                "spread": SPREAD_S,
                "lo": lo,
                "hi": hi,
                "s3": s3,
            }
            t = time.monotonic()
            with conn.transaction():
                conn.execute(FILL_REQUESTS, params)
                conn.execute(FILL_DELIVERIES, params)
                conn.execute(FILL_KEYS, params)
            rate = (hi - lo + 1) / (time.monotonic() - t)
            print(
                f"  rows {lo:>11,} .. {hi:>11,}  {rate:9,.0f} rows/s  {time.monotonic() - started:7.1f} s",
                flush=True,
            )
        insert_s = time.monotonic() - started
        t = time.monotonic()
        conn.execute("VACUUM ANALYZE requests, webhook_deliveries, webhook_attempts, idempotency_keys")
        vacuum_s = time.monotonic() - t
        if tuned:  # back to the stack's own setting for the measurements
            set_max_wal_size(soak.dsn, None)
            conn.execute("CHECKPOINT")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    soak.results.update(
        fill_s=round(insert_s, 1),
        fill_rows_per_s=round(n / insert_s),
        vacuum_analyze_s=round(vacuum_s, 1),
        database_size=size[0] if size else "",
    )
    print(
        f"fill: {insert_s:.1f} s ({n / insert_s:,.0f} rows/s), VACUUM ANALYZE {vacuum_s:.1f} s,"
        f" database {soak.results['database_size']}",
        flush=True,
    )


def set_max_wal_size(dsn: str, value: str | None) -> bool:
    """ALTER SYSTEM max_wal_size (None: back to the server's configuration) and reload;
    False where this role may not."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if value is None:
                conn.execute("ALTER SYSTEM RESET max_wal_size")
            else:
                conn.execute(f"ALTER SYSTEM SET max_wal_size = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        print(f"  (max_wal_size left as it is: {exc})", flush=True)
        return False
    return True
