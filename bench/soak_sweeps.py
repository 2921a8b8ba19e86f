"""`make soak`'s sweeps: each retention sweep timed draining a backlog of filled rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from botocore.exceptions import ClientError

from bench.soak_fill import DAY_S, file_name_of, row_id
from storage.layout import OUTPUTS, output_key, upload_key


def ids_sql(seed: str, lo: int, count: int, where: str = "true") -> str:
    """A subquery naming filled rows lo.. (count of the series) that satisfy `where` on i."""
    return f"SELECT md5('{seed}' || i)::uuid FROM generate_series({lo}, {lo + count - 1}) AS i WHERE {where}"


def run_sweeps(soak: Any) -> None:
    """Each retention sweep drains a backlog made of filled rows; rates into soak.results."""
    from core.config import get_settings
    from storage import upload_sweep
    from storage.result_sweep import delete_rows_once, drain, expire_results_once
    from storage.s3 import get_store

    settings, store = get_settings(), get_store()
    n, args = soak.args.rows, soak.args
    # Backlogs from the middle of the history, away from the rows phase B read.
    result_lo = n // 3
    result_n = min(args.result_backlog * 5 // 4 + 5, n // 3)  # a fifth of the series expired
    row_lo = 2 * n // 3
    row_n = min(args.row_backlog + 5, n // 3)

    # Result expiry: rows past their expiry with the result still there, some with objects.
    with psycopg.connect(soak.dsn, autocommit=True) as conn:
        due = conn.execute(
            "UPDATE requests SET result_expires_at = now() - interval '1 hour'"
            f" WHERE id IN ({ids_sql(soak.seed, result_lo, result_n, 'i % 5 <> 1')})"
            " AND expired_at IS NULL"
        ).rowcount
        conn.execute("ANALYZE requests")
    objects = [i for i in range(result_lo, result_lo + result_n) if i % 5 != 1][: args.output_objects]
    print(f"result sweep: {due:,} results due, {len(objects):,} with an output object in S3 ...", flush=True)
    put_many(store, (output_key(row_id(soak.seed, i), file_name_of(i)) for i in objects), "image/jpeg")
    t = time.monotonic()
    expired = drain(lambda: expire_results_once(settings, store), settings)
    result_s = time.monotonic() - t
    left = sum(1 for _ in store.keys_under(OUTPUTS))
    print(
        f"  {expired:,} expired in {result_s:.2f} s: {expired / result_s:,.0f} rows/s"
        f" ({left} output objects left)",
        flush=True,
    )

    # Row deletion: rows whose result expired and that ended beyond ROW_RETENTION_S; a tenth
    # of the series has a delivery (and its attempt), as in the whole table.
    old = timedelta(seconds=settings.row_retention_s + DAY_S)
    with psycopg.connect(soak.dsn, autocommit=True) as conn:
        due_rows = conn.execute(
            "UPDATE requests SET expired_at = coalesce(expired_at, now() - interval '1 day'),"
            " output = NULL, finished_at = finished_at - %s"
            f" WHERE id IN ({ids_sql(soak.seed, row_lo, row_n)})",
            (old,),
        ).rowcount
        deliveries = conn.execute(
            "SELECT count(*) FROM webhook_deliveries"
            f" WHERE request_id IN ({ids_sql(soak.seed, row_lo, row_n)})"
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
    put_many(store, (upload_key(uuid.uuid4(), "portrait.png") for _ in range(args.uploads)), "image/png")
    later = datetime.now(UTC) + timedelta(seconds=settings.upload_retention_s + DAY_S)
    t = time.monotonic()
    try:
        swept = upload_sweep.sweep_once(store, settings.upload_retention_s, now=later)
    except ClientError as exc:  # reported, so that the other figures still come out
        soak.results["upload_sweep_error"] = str(exc)
        print(f"  upload sweep FAILED after {time.monotonic() - t:.2f} s: {exc}", flush=True)
        swept = upload_sweep.SweepResult()
    upload_s = time.monotonic() - t
    print(
        f"  {swept.deleted:,} deleted in {upload_s:.2f} s: {swept.deleted / upload_s:,.0f} objects/s",
        flush=True,
    )
    soak.results.update(
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
