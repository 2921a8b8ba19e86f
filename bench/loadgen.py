"""A small closed-loop HTTP/1.1 load generator (keep-alive, raw asyncio streams).

Run in its own process so that the client's CPU does not count against the server's event loop:
`run_load(...)` starts one and returns the figures.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _one_connection(
    host: str, port: int, raw: bytes, deadline: float, latencies: list[float], statuses: dict[int, int]
) -> int:
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(raw)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("server closed the connection")
            status = int(status_line.split()[1])
            length = 0
            chunked = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
                elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - start) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 500:
                errors += 1
    finally:
        writer.close()
    return errors


async def _drive(url: str, method: str, body: bytes, concurrency: int, seconds: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    raw = head.encode() + b"\r\n" + body
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + seconds
    errors = await asyncio.gather(
        *(_one_connection(host, port, raw, deadline, latencies, statuses) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - start
    return LoadResult(
        requests=len(latencies),
        errors=sum(errors),
        seconds=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p99_ms=percentile(latencies, 0.99),
        statuses=statuses,
    )


def _child(queue: mp.Queue, url: str, method: str, body: bytes, concurrency: int, seconds: float) -> None:
    queue.put(asyncio.run(_drive(url, method, body, concurrency, seconds)))


def run_load(
    url: str, *, method: str = "GET", body: bytes = b"", concurrency: int = 16, seconds: float = 5.0
) -> LoadResult:
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=_child, args=(queue, url, method, body, concurrency, seconds)
    )
    proc.start()
    result = queue.get(timeout=seconds + 60)
    proc.join(timeout=10)
    return result
