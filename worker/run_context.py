"""What a running request shares with the engine: its log sink and its cancellation check.

Both also renew the request's lease in PostgreSQL, as does a background heartbeat, so a worker
that dies is noticed within one lease and its request can run elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from core.config import get_settings
from core.db import session_scope
from core.request_store import append_logs, log_entry, renew_lease

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The client cancelled the request, or this worker lost its claim on it."""


class RunContext:
    def __init__(self, request_id: uuid.UUID, attempt: int, *, lease_s: int) -> None:
        self.request_id = request_id
        self.attempt = attempt
        self._lease_s = lease_s
        self._stop = threading.Event()
        self._cancelled = threading.Event()
        self._last_renew = 0.0
        # Fault injection only (FAULT_STAGE_DELAY_S, off by default): stretches every stage.
        self._stage_delay_s = get_settings().fault_stage_delay_s
        self._heartbeat = threading.Thread(target=self._beat, name=f"lease-{request_id}", daemon=True)

    def __enter__(self) -> RunContext:
        self._heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._heartbeat.join(timeout=5)

    def log(self, message: str, level: str = "INFO") -> None:
        log.info("[%s] %s", self.request_id, message)
        try:
            with session_scope() as session:
                append_logs(session, self.request_id, [log_entry(message, level)])
        except Exception:
            log.exception("could not store a log line of %s", self.request_id)

    def check(self) -> None:
        """Raise Cancelled if the request should stop; called by the engine between stages."""
        if self._stage_delay_s:
            time.sleep(self._stage_delay_s)
        if time.monotonic() - self._last_renew > 0.5:
            self._renew()
        if self._cancelled.is_set():
            raise Cancelled("Request cancelled")

    def _renew(self) -> None:
        self._last_renew = time.monotonic()
        try:
            with session_scope() as session:
                cancel_requested = renew_lease(session, self.request_id, self.attempt, lease_s=self._lease_s)
        except Exception:
            log.exception("could not renew the lease of %s", self.request_id)
            return
        if cancel_requested is None or cancel_requested:
            self._cancelled.set()

    def _beat(self) -> None:
        while not self._stop.wait(self._lease_s / 3):
            self._renew()
