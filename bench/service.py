"""`make bench`: the whole path against a live stack on this machine, figures printed and saved.

Starts its own PostgreSQL, Redis and S3 (stack.servers), the API under uvicorn and Celery
workers, then measures:
  * submit throughput (closed loop over --concurrency connections: the most the API takes) and
    submit latency at --submit-rate requests/s (open loop: what clients see at that load), with
    the load generator in a second process (bench/loadgen.py),
  * status-poll throughput,
  * queue overhead with an idle worker (submit -> worker start, plus worker finish -> result
    visible to the client), and the stricter service overhead (everything but the engine's own
    time: fetching the input, encoding and storing the output included),
  * end-to-end latency of one edit,
  * edits per second with 1, 2 and 4 worker processes.
Writes bench/results.json.

    python bench/service.py [--engine full|tiny] [--seconds 5] [--concurrency 32] [--submit-rate 500]
        [--repeat 3] [--api-workers 1]
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadResult, percentile, run_load  # noqa: E402
from stack.servers import LocalStack  # noqa: E402
from tests.data import photo  # noqa: E402
from tests.support.processes import Child, start_api, start_worker  # noqa: E402

APP = "fal-ai/live-portrait/image"
TARGETS = {"submit_rps": 500, "submit_p99_ms": 50, "status_rps": 2000, "queue_overhead_p50_ms": 20}


def portrait_png() -> tuple[bytes, dict[str, object]]:
    """The portrait the project carries (the conformance kit's photo), as a PNG."""
    image, extra = photo("astronaut"), {}
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue(), extra


def serve_file(data: bytes) -> str:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/portrait.png"


def weights_for(engine: str, tmp: Path) -> Path:
    from worker.liveportrait.testing import write_random_weights

    if engine == "tiny":
        return write_random_weights(tmp / "tiny-weights", arch="tiny")
    sys.path.insert(0, str(ROOT / "bench"))
    from engine import weights_dir  # the same cache bench-engine uses

    return weights_dir()


def wait_done(
    client: httpx.Client, base: str, request_id: str, timeout: float = 600, poll_s: float = 0.002
) -> dict:
    """Poll until COMPLETED. The overhead figures poll every 2 ms; the full-size edits every 20 ms,
    so that the poller does not take CPU from the edit it waits for on a small machine."""
    deadline = time.monotonic() + timeout
    url = f"{base}/{APP.rsplit('/', 1)[0]}/requests/{request_id}/status"
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["status"] == "COMPLETED":
            return body
        time.sleep(poll_s)
    raise TimeoutError(request_id)


def submit(client: httpx.Client, base: str, payload: dict) -> str:
    resp = client.post(f"{base}/{APP}", json=payload)
    resp.raise_for_status()
    return resp.json()["request_id"]


def purge(env: dict[str, str]) -> None:
    """Forget the requests the load tests queued (nobody consumed them), and vacuum, as
    autovacuum would soon: otherwise every later queue-position count walks the dead entries."""
    import redis
    from sqlalchemy import create_engine, text

    engine = create_engine(env["DATABASE_URL"], isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM requests"))
        conn.execute(text("VACUUM ANALYZE requests"))
    engine.dispose()
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=["full", "tiny"], default="full")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--submit-rate", type=float, default=500.0, help="open-loop rate for submit latency")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each API load; medians are reported")
    parser.add_argument("--api-only", action="store_true", help="only the API figures (no workers)")
    parser.add_argument("--overhead-samples", type=int, default=30)
    parser.add_argument("--edits-per-worker", type=int, default=2)
    args = parser.parse_args()

    results: dict[str, object] = {
        "engine": args.engine,
        "machine": f"{os.cpu_count()} CPUs",
        "api_processes": args.api_workers,
    }
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        # Durable, as `make run` and any real deployment: fsync on every commit.
        LocalStack(Path(tmp_name) / "stack", persistent=True) as stack,
    ):
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        image, extra = portrait_png()
        image_url = serve_file(image)
        env = {
            **stack.env(),
            "AUTH_MODE": "off",
            "ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
            "QUEUE_NAME": f"bench{uuid.uuid4().hex[:6]}",
            "DEVICE": "cpu",
            "RECONCILE_INTERVAL_S": "5",
            "STATUS_STREAM_POLL_S": "0.02",
        }
        from core.migrate import upgrade

        upgrade(env["DATABASE_URL"])
        api_env = {**env, "WEB_CONCURRENCY": str(args.api_workers)}
        api, base = start_api(api_env, logs)
        payload = {"image_url": image_url, "smile": 0.5, **extra}
        try:
            body = json.dumps(payload).encode()
            status_path = f"{APP.rsplit('/', 1)[0]}/requests/{{rid}}/status"

            def submit_saturated() -> LoadResult:
                return run_load(f"{base}/{APP}", method="POST", body=body, concurrency=args.concurrency,
                                seconds=args.seconds)  # fmt: skip

            def submit_at_rate() -> LoadResult:
                # Latency as clients see it at the target load: open loop, a request every 1/rate s.
                return run_load(f"{base}/{APP}", method="POST", body=body, concurrency=4 * args.concurrency,
                                seconds=args.seconds, rate=args.submit_rate)  # fmt: skip

            def status_polls() -> LoadResult:
                with httpx.Client(timeout=30) as client:
                    rid = submit(client, base, payload)
                return run_load(f"{base}/{status_path.format(rid=rid)}", concurrency=args.concurrency,
                                seconds=args.seconds)  # fmt: skip

            def phase(label: str, measure: Callable[[], LoadResult]) -> LoadResult:
                print(f"{label}, {args.repeat} x {args.seconds:.0f} s ...", flush=True)
                return median_of(args.repeat, measure, lambda: purge(env))

            load = phase(f"submit: {args.concurrency} connections", submit_saturated)
            results.update(submit_rps=load.rps, submit_saturated_p50_ms=load.p50_ms,
                           submit_saturated_p99_ms=load.p99_ms, submit_errors=load.errors)  # fmt: skip
            load = phase(f"submit: {args.submit_rate:.0f} requests/s", submit_at_rate)
            results.update(submit_rate=args.submit_rate, submit_rate_rps=load.rps, submit_p50_ms=load.p50_ms,
                           submit_p99_ms=load.p99_ms, submit_rate_errors=load.errors)  # fmt: skip
            load = phase(f"status: {args.concurrency} connections", status_polls)
            results.update(status_rps=load.rps, status_p50_ms=load.p50_ms, status_p99_ms=load.p99_ms,
                           status_errors=load.errors)  # fmt: skip

            if not args.api_only:
                # Overheads with an idle worker and the narrow engine, so that the edit itself is short.
                # Queue overhead, as the issue defines it: submit until the worker starts the request
                # (its claim, started_at) plus the worker's finish (finished_at, the completing
                # statement, after the output is stored) until the client sees COMPLETED. Service
                # overhead, stricter: everything a client waits beyond the engine's own work
                # (metrics.inference_time), so fetching the input, encoding and storing the output
                # and the worker's bookkeeping count too. Client and PostgreSQL share this host's clock.
                tiny_env = {**env, "WEIGHTS_DIR": str(weights_for("tiny", tmp)), "ENGINE_ARCH": "tiny"}
                queues = f"{env['QUEUE_NAME']}.normal,{env['QUEUE_NAME']}.low"
                worker = start_worker(tiny_env, logs, "overhead", queues)
                samples: dict[str, tuple[float, float, float]] = {}  # id -> (sent, seen, engine seconds)
                with httpx.Client(timeout=30) as client:
                    wait_done(client, base, submit(client, base, payload))  # warm-up: model load, caches
                    print(f"queue overhead: {args.overhead_samples} sequential requests ...", flush=True)
                    for _ in range(args.overhead_samples):
                        sent = time.time()
                        rid = submit(client, base, payload)
                        status = wait_done(client, base, rid)
                        samples[rid] = (sent, time.time(), float(status["metrics"]["inference_time"]))
                worker.stop()
                spans = run_spans(env, list(samples))
                start_waits = [1000 * (spans[rid][0] - sent) for rid, (sent, _, _) in samples.items()]
                visible_waits = [1000 * (seen - spans[rid][1]) for rid, (_, seen, _) in samples.items()]
                queue = [a + b for a, b in zip(start_waits, visible_waits, strict=True)]
                service = [1000 * (seen - sent - engine) for sent, seen, engine in samples.values()]
                in_worker = [s - q for s, q in zip(service, queue, strict=True)]
                results.update(
                    queue_overhead_p50_ms=statistics.median(queue),
                    queue_overhead_p99_ms=percentile(queue, 0.99),
                    start_wait_p50_ms=statistics.median(start_waits),
                    visible_wait_p50_ms=statistics.median(visible_waits),
                    service_overhead_p50_ms=statistics.median(service),
                    service_overhead_p99_ms=percentile(service, 0.99),
                    worker_overhead_p50_ms=statistics.median(in_worker),
                )
                purge(env)

                # end to end and throughput with the chosen engine
                run_env = {
                    **env,
                    "WEIGHTS_DIR": str(weights_for(args.engine, tmp)),
                    "ENGINE_ARCH": args.engine,
                }
                by_workers: dict[str, float] = {}
                for n in (1, 2, 4):
                    workers: list[Child] = [
                        start_worker(run_env, logs, f"w{n}-{i}", queues) for i in range(n)
                    ]
                    with httpx.Client(timeout=60) as client:
                        warm = [submit(client, base, payload) for _ in range(n)]
                        for rid in warm:
                            wait_done(client, base, rid, poll_s=0.02)
                        if n == 1:
                            e2e = []
                            for _ in range(3):
                                t0 = time.perf_counter()
                                wait_done(client, base, submit(client, base, payload), poll_s=0.02)
                                e2e.append(time.perf_counter() - t0)
                            results["e2e_latency_s"] = statistics.median(e2e)
                        count = n * args.edits_per_worker
                        print(f"throughput: {count} edits on {n} worker process(es) ...", flush=True)
                        t0 = time.perf_counter()
                        ids = [submit(client, base, payload) for _ in range(count)]
                        for rid in ids:
                            wait_done(client, base, rid, poll_s=0.02)
                        by_workers[str(n)] = count / (time.perf_counter() - t0)
                    for w in workers:
                        w.stop()
                results["edits_per_s_by_workers"] = by_workers
        finally:
            api.stop()

    report(results)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def median_of(runs: int, measure: Callable[[], LoadResult], reset: Callable[[], None]) -> LoadResult:
    """Each figure's median over `runs` runs (a shared machine's neighbours come and go); the
    queue is emptied before each run, so every run starts from the same state."""
    results = []
    for _ in range(runs):
        reset()
        results.append(measure())
        r = results[-1]
        print(f"  {r.rps:8.1f} req/s  p50 {r.p50_ms:6.1f}  p99 {r.p99_ms:7.1f}  max {r.max_ms:7.1f} ms")
    return LoadResult(
        requests=int(statistics.median(r.requests for r in results)),
        errors=sum(r.errors for r in results),
        seconds=statistics.median(r.seconds for r in results),
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        statuses={},
    )


def run_spans(env: dict[str, str], request_ids: list[str]) -> dict[str, tuple[float, float]]:
    """Per request: (started_at, finished_at) as Unix times."""
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, extract(epoch FROM started_at), extract(epoch FROM finished_at)"
                " FROM requests WHERE id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": [uuid.UUID(rid) for rid in request_ids]},
        ).all()
    engine.dispose()
    return {str(r[0]): (float(r[1]), float(r[2])) for r in rows}


def report(r: dict) -> None:
    def line(name: str, value: float | None, unit: str, key: str | None = None) -> None:
        if value is None:
            return  # not measured in this run (--api-only)
        target = TARGETS.get(key or "")
        mark = ""
        if target is not None:
            ok = value <= target if key and key.endswith("_ms") else value >= target
            mark = (
                f"target {'<' if key and key.endswith('_ms') else '>='} {target}: {'met' if ok else 'MISSED'}"
            )
        print(f"{name:<44}{value:>12.2f} {unit:<8}{mark}")

    print(
        f"\nportrait-queue service benchmark ({r['machine']}, {r['api_processes']} API process(es),"
        f" engine {r['engine']})"
    )
    line("submit throughput (closed loop, saturated)", r["submit_rps"], "req/s", "submit_rps")
    line("  latency p50 when saturated", r["submit_saturated_p50_ms"], "ms")
    line("  latency p99 when saturated", r["submit_saturated_p99_ms"], "ms")
    line(f"submit latency p50 at {r['submit_rate']:.0f} req/s", r["submit_p50_ms"], "ms")
    line(f"submit latency p99 at {r['submit_rate']:.0f} req/s", r["submit_p99_ms"], "ms", "submit_p99_ms")
    line("status-poll throughput", r["status_rps"], "req/s", "status_rps")
    line("status latency p99", r["status_p99_ms"], "ms")
    line("queue overhead p50 (idle worker)", r.get("queue_overhead_p50_ms"), "ms", "queue_overhead_p50_ms")
    line("queue overhead p99", r.get("queue_overhead_p99_ms"), "ms")
    line("  submit -> worker start p50", r.get("start_wait_p50_ms"), "ms")
    line("  worker finish -> client sees COMPLETED p50", r.get("visible_wait_p50_ms"), "ms")
    line("service overhead p50 (all but the engine)", r.get("service_overhead_p50_ms"), "ms")
    line("service overhead p99", r.get("service_overhead_p99_ms"), "ms")
    line("  of which in the worker (fetch, encode, store) p50", r.get("worker_overhead_p50_ms"), "ms")
    line("end-to-end latency, one edit", r.get("e2e_latency_s"), "s")
    for n, value in r.get("edits_per_s_by_workers", {}).items():
        line(f"throughput with {n} worker process(es)", value, "edits/s")


if __name__ == "__main__":
    main()
