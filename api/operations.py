"""Operator and user facing extras of the API: /metrics, the playground at /, access logs.

Kept out of api/app.py so that the app factory stays a list of one-line installs.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.access_log import AccessLogMiddleware
from api.metrics import metrics_router
from api.playground_routes import playground_router
from core.config import Settings


def install(app: FastAPI, settings: Settings) -> None:
    if settings.metrics_enabled:
        app.include_router(metrics_router())
    if settings.playground_enabled:
        app.include_router(playground_router(settings))
    # Added last, so outermost: every answer is logged, the ones other middleware gives included.
    app.add_middleware(AccessLogMiddleware)
