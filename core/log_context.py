"""The request being handled, as a context variable that every log line picks up.

A context variable (not a thread-local) because the API handles requests in asyncio tasks and
in threadpool threads that copy the caller's context; Celery tasks bind it for their run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


@contextmanager
def bound_request_id(request_id: str | uuid.UUID | None) -> Iterator[None]:
    """Log lines inside carry this request_id; the previous one is restored afterwards."""
    token = _request_id.set(str(request_id) if request_id is not None else None)
    try:
        yield
    finally:
        _request_id.reset(token)


def bind_request_id(request_id: str | uuid.UUID | None) -> None:
    """Bind without restoring: for code whose end is a separate hook (Celery task_postrun)."""
    _request_id.set(str(request_id) if request_id is not None else None)
