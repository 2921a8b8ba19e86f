"""Exception handlers that turn infrastructure trouble into fal-style answers instead of 500s."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.db_async import DatabaseUnavailable
from core.requests_table import LimitExceeded
from core.requests_table.queue_length import QueueLengthExceeded

log = logging.getLogger(__name__)

# Clients (fal-client included) retry 503s; a short hint keeps them from hammering a restart.
DB_RETRY_AFTER_S = 5


async def _limit_exceeded(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LimitExceeded)
    return _too_many(exc.message, "rate_limited", exc.retry_after_s)


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueLengthExceeded)
    return _too_many(exc.message, "queue_length_exceeded", exc.retry_after_s)


def _too_many(message: str, error_type: str, retry_after_s: int) -> JSONResponse:
    return JSONResponse(
        {"detail": message, "error_type": error_type},
        status_code=429,
        headers={"Retry-After": str(retry_after_s), "X-Fal-Error-Type": error_type},
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Both pools replace broken connections, so once PostgreSQL is back the next call works.
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {
            "detail": "The service's database is unavailable; retry shortly",
            "error_type": "service_unavailable",
        },
        status_code=503,
        headers={
            "Retry-After": str(DB_RETRY_AFTER_S),
            "X-Fal-Retryable": "true",
            "X-Fal-Error-Type": "service_unavailable",
        },
    )


_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    LimitExceeded: _limit_exceeded,
    QueueLengthExceeded: _queue_full,
    **{
        error: _database_unavailable
        for error in (OperationalError, InterfaceError, PoolTimeoutError, DatabaseUnavailable)
    },
}


async def known_error_reply(request: Request, exc: Exception) -> JSONResponse | None:
    """The answer for an exception these handlers cover (for api.fast_path), else None."""
    for kind, handler in _HANDLERS.items():
        if isinstance(exc, kind):
            return await handler(request, exc)
    return None


def install(app: FastAPI) -> None:
    for kind, handler in _HANDLERS.items():
        app.add_exception_handler(kind, handler)
