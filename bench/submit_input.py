"""Submit time and row size of a large data-URI input, against a live stack on this machine.

Starts its own PostgreSQL (durable, as `make run`), Redis and S3 (stack.servers) and the API
under uvicorn, without workers: only the submit is measured. Sends --count submits of a data URI
of about --uri-mb megabytes one after another over one connection (after --warmup unmeasured
ones), then reads from PostgreSQL how large those requests' rows are, and prints the figures:
the client-side submit time (p50, p90, max), the stored `input` (pg_column_size, i.e. after
TOAST compression, and its text length) and the whole row, and the bucket objects under inputs/.

    python bench/submit_input.py [--uri-mb 4] [--count 20] [--warmup 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import percentile  # noqa: E402
from stack.servers import LocalStack  # noqa: E402
from storage.layout import INPUTS  # noqa: E402
from tests.support.processes import start_api  # noqa: E402

APP = "fal-ai/live-portrait/image"


def noise_png_data_uri(uri_bytes: int) -> str:
    # Noise does not compress, so neither PNG nor PostgreSQL's TOAST shrinks it: the worst case,
    # and close to what a photo's JPEG is to either of them.
    side = int((uri_bytes * 3 / 4 / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def row_sizes(database_url: str, request_ids: list[str]) -> tuple[int, int, int]:
    """Median of pg_column_size(input), octet_length(input::text) and pg_column_size(row)."""
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(database_url)
    query = text(
        "SELECT pg_column_size(input), octet_length(input::text), pg_column_size(r.*)"
        " FROM requests r WHERE id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    with engine.connect() as conn:
        rows = conn.execute(query, {"ids": [uuid.UUID(i) for i in request_ids]}).all()
    engine.dispose()
    column, text_length, row = (int(statistics.median(values)) for values in zip(*rows, strict=True))
    return column, text_length, row


def stored_inputs(env: dict[str, str]) -> tuple[int, int]:
    """Count and total bytes of the objects under inputs/ in the bucket."""
    from botocore.exceptions import ClientError

    from core.config import Settings
    from storage.s3 import s3_client

    settings = Settings(**{k.lower(): v for k, v in env.items() if k.startswith("S3_")})
    client = s3_client(settings)
    count = size = 0
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket, Prefix=INPUTS)
        for page in pages:
            for obj in page.get("Contents", []):
                count += 1
                size += int(obj["Size"])
    except ClientError:  # no bucket yet: nothing was ever stored
        return 0, 0
    return count, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri-mb", type=float, default=4.0, help="size of the data URI, in MB (10^6 bytes)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    uri = noise_png_data_uri(int(args.uri_mb * 1_000_000))
    body = ('{"image_url": "' + uri + '", "smile": 0.5}').encode()
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        LocalStack(Path(tmp_name) / "stack", persistent=True) as stack,
    ):
        logs = Path(tmp_name) / "logs"
        logs.mkdir()
        env = {
            **stack.env(),
            "AUTH_MODE": "off",
            "QUEUE_NAME": f"bench{uuid.uuid4().hex[:6]}",
            "S3_BUCKET": "bench-inputs",
            "RECONCILE_INTERVAL_S": "0",
        }
        from core.migrate import upgrade

        upgrade(env["DATABASE_URL"])
        api, base = start_api(env, logs)
        try:
            times: list[float] = []
            request_ids: list[str] = []
            with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:
                for i in range(args.warmup + args.count):
                    started = time.perf_counter()
                    response = client.post(f"{base}/{APP}", content=body)
                    elapsed = time.perf_counter() - started
                    response.raise_for_status()
                    if i >= args.warmup:
                        times.append(elapsed * 1000)
                        request_ids.append(response.json()["request_id"])
            column, text_length, row = row_sizes(env["DATABASE_URL"], request_ids)
            objects, object_bytes = stored_inputs(env)
        finally:
            api.stop()
    print(f"data URI: {len(uri):,} characters; body {len(body):,} bytes; {args.count} submits")
    print(
        f"submit ms: p50 {percentile(times, 0.5):.1f}  p90 {percentile(times, 0.9):.1f}  max {max(times):.1f}"
    )
    print(f"row: input {column:,} bytes stored ({text_length:,} as text); whole row {row:,} bytes")
    print(f"bucket inputs/: {objects} objects, {object_bytes:,} bytes")


if __name__ == "__main__":
    main()
