"""A small HTTP/1.1 load generator (keep-alive connections, uvloop protocols).

Run in its own process so that the client's CPU does not count against the server's event loop:
`run_load(...)` starts one and returns the figures. Closed loop (each connection sends its next
request as soon as the answer is in: the most the server can do) or open loop (a fixed rate:
the latency clients see at that load). Parsing is the least that HTTP/1.1 with Content-Length or
chunked bodies needs, so that the client costs little CPU beside the server on a small machine.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `on_idle` is called when it is open and after each answer."""

    def __init__(self, raw: bytes, tally: _Tally, on_idle: Callable[[_Connection], None]) -> None:
        self.raw, self.tally, self.on_idle = raw, tally, on_idle
        self.buffer = bytearray()
        self.started = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.on_idle(self)

    def send(self, started: float) -> None:
        """Send the request; its latency counts from `started` (its scheduled time, open loop)."""
        assert self.transport is not None
        self.started = started
        self.transport.write(self.raw)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        size = _answer_size(self.buffer)
        if size is None:
            return
        status = int(self.buffer[9:12])
        del self.buffer[:size]
        self.tally.latencies.append((time.perf_counter() - self.started) * 1000)
        self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1
        if status >= 500:
            self.tally.errors += 1
        self.on_idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _answer_size(buffer: bytearray) -> int | None:
    """Bytes of the first complete answer in buffer, or None while it is incomplete."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end]).lower()
    body_start = head_end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : end if end >= 0 else len(head)])
        return body_start + length if len(buffer) >= body_start + length else None
    if b"\r\ntransfer-encoding: chunked" in head:
        pos = body_start
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            chunk = int(buffer[pos:line_end].split(b";")[0], 16)
            pos = line_end + 2 + chunk + 2
            if len(buffer) < pos:
                return None
            if chunk == 0:
                return pos
    return body_start


async def _drive(
    url: str, method: str, body: bytes, concurrency: int, seconds: float, rate: float | None
) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    raw = head.encode() + b"\r\n" + body
    loop = asyncio.get_running_loop()
    tally = _Tally()
    start = time.perf_counter()
    deadline = start + seconds
    connections: list[_Connection] = []

    if rate is None:
        # Closed loop: each connection sends again as soon as its answer is in.
        def again(conn: _Connection) -> None:
            now = time.perf_counter()
            if now < deadline:
                conn.send(now)
            else:
                conn.close()

        for _ in range(concurrency):
            _, conn = await loop.create_connection(lambda: _Connection(raw, tally, again), host, port)
            connections.append(conn)
    else:
        # Open loop: request i is due at start + i/rate whatever the server does; a late answer
        # counts from its due time (no coordinated omission). `concurrency` caps the connections.
        idle: list[_Connection] = []
        due: deque[float] = deque()

        def dispatch() -> None:
            while due and idle:
                idle.pop().send(due.popleft())

        def ready(conn: _Connection) -> None:
            idle.append(conn)
            dispatch()

        # A few connections opened before the clock starts; more only when all are busy.
        for _ in range(min(concurrency, 8)):
            _, conn = await loop.create_connection(lambda: _Connection(raw, tally, ready), host, port)
            connections.append(conn)
        start = time.perf_counter()
        deadline = start + seconds
        sent = 0
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            while start + sent / rate <= now:
                due.append(start + sent / rate)
                sent += 1
            dispatch()
            if due and not idle and len(connections) < concurrency:
                _, conn = await loop.create_connection(lambda: _Connection(raw, tally, ready), host, port)
                connections.append(conn)
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        settle = time.perf_counter() + 30
        while (due or len(idle) < len(connections)) and time.perf_counter() < settle:
            await asyncio.sleep(0.005)
        for conn in connections:
            conn.close()
    await asyncio.gather(*(conn.closed for conn in connections))
    elapsed = time.perf_counter() - start
    latencies = tally.latencies
    return LoadResult(
        requests=len(latencies),
        errors=tally.errors,
        seconds=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
        statuses=tally.statuses,
    )


def _child(
    queue: mp.Queue, url: str, method: str, body: bytes, concurrency: int, seconds: float, rate: float | None
) -> None:
    try:
        import uvloop  # uvicorn[standard] brings it; the plain loop works too, only slower

        uvloop.install()
    except ImportError:
        pass
    queue.put(asyncio.run(_drive(url, method, body, concurrency, seconds, rate)))


def run_load(
    url: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    concurrency: int = 16,
    seconds: float = 5.0,
    rate: float | None = None,
) -> LoadResult:
    """Closed loop over `concurrency` connections, or, with `rate`, requests sent at that many
    per second (open loop) over at most `concurrency` connections."""
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=_child, args=(queue, url, method, body, concurrency, seconds, rate)
    )
    proc.start()
    result = queue.get(timeout=seconds + 60)
    proc.join(timeout=10)
    return result
