"""What a running request shares with the engine: its log sink and its cancellation check.

Neither touches the database on the engine's thread. A background thread per request (the
"sync" thread) does that work: it writes log lines LOG_FLUSH_DELAY_S after they are logged (a
burst, such as the engine's stage timings, in one write), and every CANCEL_POLL_S it renews the
request's lease in PostgreSQL and reads back whether the client cancelled (or this worker lost
its claim), which `check` then reports. Each write is one UPDATE fenced by the claim
(`renew_lease`), so log lines also renew the lease and a worker that lost its claim writes
nothing more. A worker that dies stops renewing, so its request can run elsewhere after one
lease.

Lines still buffered when the request ends are not written by the thread: `close` stops it and
hands them over, and the worker writes them in the same statement that completes or fails the
request (`complete_ok` / `complete_failed` with `logs=`), so a finished row always holds every
line, in order, and the end of a request costs no separate log write.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from core.config import get_settings
from core.db import session_scope
from core.requests_table import log_entry, renew_lease

log = logging.getLogger(__name__)

# How often a running request's lease is renewed and its cancellation flag read. A cancellation
# is seen by the engine at its first stage boundary after the next poll.
CANCEL_POLL_S = 0.5
# A log line waits this long before the sync thread writes it, with the lines logged meanwhile.
# Clients see lines at most this much later; in exchange the lines of a short step (fetching the
# input, the last stages, storing the output) share a write or ride along with the completion,
# instead of a write competing with the worker's own work.
LOG_FLUSH_DELAY_S = 0.05


class Cancelled(Exception):
    """The client cancelled the request, or this worker lost its claim on it."""


class RunContext:
    def __init__(self, request_id: uuid.UUID, attempt: int, *, lease_s: int) -> None:
        self.request_id = request_id
        self.attempt = attempt
        self._lease_s = lease_s
        # The claim just set a fresh lease and read the cancellation flag: the first renewal is
        # due one poll from now, or sooner if a third of the lease is shorter.
        self._renew_every = min(CANCEL_POLL_S, lease_s / 3)
        self._cancelled = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards _pending and _closed
        self._writing = threading.Lock()  # held while the sync thread writes: lines stay ordered
        self._pending: list[dict[str, Any]] = []
        self._pending_since = 0.0  # when the oldest buffered line was logged
        self._closed = False
        self.callback_s = 0.0  # time the engine spent inside log() and check(), for its metrics
        # Fault injection only (FAULT_STAGE_DELAY_S, off by default): stretches every stage.
        self._stage_delay_s = get_settings().fault_stage_delay_s
        self._sync = threading.Thread(target=self._run, name=f"sync-{request_id}", daemon=True)

    def __enter__(self) -> RunContext:
        self._sync.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Normally close() already ran (the worker took the last lines for the final write);
        # on any other way out, whatever is still buffered is written here.
        rest = self.close()
        if rest:
            self._write(rest)
        self._sync.join(timeout=5)

    def log(self, message: str, level: str = "INFO") -> None:
        started = time.perf_counter()
        log.info("[%s] %s", self.request_id, message)
        entry = log_entry(message, level)
        with self._lock:
            closed = self._closed
            first = not self._pending
            if not closed:
                if first:
                    self._pending_since = time.monotonic()
                self._pending.append(entry)
        if closed:  # after the end (should not happen): write it directly, fenced as ever
            self._write([entry])
        elif first:
            self._wake.set()
        self.callback_s += time.perf_counter() - started

    def check(self) -> None:
        """Raise Cancelled if the request should stop; called by the engine between stages."""
        if self._stage_delay_s:
            time.sleep(self._stage_delay_s)
        if self._cancelled.is_set():
            raise Cancelled("Request cancelled")

    def close(self) -> list[dict[str, Any]]:
        """Stop the sync thread and return the lines it has not written (oldest first), for the
        statement that finishes the request. Idempotent: later calls return nothing.

        It does not wait for the thread to exit, only for a write in flight to end: a write
        starts only under `_writing` and after checking `_stop`, so none can follow."""
        started = time.perf_counter()
        self._stop.set()
        self._wake.set()
        with self._writing, self._lock:
            self._closed = True
            rest, self._pending = self._pending, []
        self.callback_s += time.perf_counter() - started
        return rest

    # -- the sync thread ------------------------------------------------------------------------
    def _run(self) -> None:
        next_renew = time.monotonic() + self._renew_every
        while not self._stop.is_set():
            due = next_renew
            if self._pending:
                due = min(due, self._pending_since + LOG_FLUSH_DELAY_S)
            timeout = due - time.monotonic()
            if timeout > 0:
                self._wake.wait(timeout)
                self._wake.clear()
                continue
            with self._writing:
                if self._stop.is_set():
                    break
                with self._lock:
                    lines, self._pending = self._pending, []
                self._sync_once(lines)
            next_renew = time.monotonic() + self._renew_every

    def _sync_once(self, lines: list[dict[str, Any]]) -> None:
        """Renew the lease, append `lines`, and read the cancellation flag, in one UPDATE."""
        try:
            with session_scope() as session:
                cancel_requested = renew_lease(
                    session, self.request_id, self.attempt, lease_s=self._lease_s, logs=lines
                )
        except Exception:
            log.exception("could not renew the lease of %s", self.request_id)
            return  # the lines are dropped, as a failed log write always did
        if cancel_requested is None or cancel_requested:
            self._cancelled.set()

    def _write(self, lines: list[dict[str, Any]]) -> None:
        try:
            with session_scope() as session:
                renew_lease(session, self.request_id, self.attempt, lease_s=self._lease_s, logs=lines)
        except Exception:
            log.exception("could not store log lines of %s", self.request_id)
