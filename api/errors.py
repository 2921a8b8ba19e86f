"""Exception handlers that turn infrastructure trouble into fal-style answers instead of 500s."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.key_limits import LimitExceeded

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
    # The pool pre-pings connections, so once PostgreSQL is back the next call simply works.
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {
            "detail": "The service's database is unavailable; retry shortly",
            "error_type": "service_unavailable",
        },
        status_code=503,
        headers={"Retry-After": str(DB_RETRY_AFTER_S), "X-Fal-Retryable": "true"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(LimitExceeded, _limit_exceeded)
    for error in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(error, _database_unavailable)
