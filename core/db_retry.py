"""Retrying a database write through a PostgreSQL restart.

Used by workers for the writes that must not be lost once work is done (the claim, the result):
while the database is unreachable they are retried with a capped backoff for up to a deadline,
after which the error propagates and the lease/reconciler machinery takes over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)
_FIRST_WAIT_S = 0.2
_MAX_WAIT_S = 2.0


def retry_unavailable(action: Callable[[], T], *, for_s: float, what: str) -> T:
    """Run action (one whole transaction) until it succeeds or for_s seconds have passed."""
    give_up_at = time.monotonic() + for_s
    wait = _FIRST_WAIT_S
    while True:
        try:
            return action()
        except UNAVAILABLE as exc:
            if time.monotonic() + wait > give_up_at:
                raise
            log.warning("database unavailable for %s (%s); retrying in %.1fs", what, type(exc).__name__, wait)
            time.sleep(wait)
            wait = min(wait * 2, _MAX_WAIT_S)
