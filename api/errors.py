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

log = logging.getLogger(__name__)

# Clients (fal-client included) retry 503s; a short hint keeps them from hammering a restart.
DB_RETRY_AFTER_S = 5


async def _limit_exceeded(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LimitExceeded)
    return JSONResponse(
        {"detail": exc.message, "error_type": "rate_limited"},
        status_code=429,
        headers={"Retry-After": str(exc.retry_after_s)},
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
        headers={"Retry-After": str(DB_RETRY_AFTER_S), "X-Fal-Retryable": "true"},
    )


_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    LimitExceeded: _limit_exceeded,
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
