"""The FastAPI application: fal's queue and run APIs for every configured endpoint id."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import health
from api.app_ids import AppId
from api.queue_routes import requests_router, submit_router
from api.run_routes import run_router
from core.config import Settings, get_settings
from storage.s3 import get_store
from worker.reconcile import run_forever

log = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    try:
        get_store().ensure_bucket()
    except Exception:
        # Not fatal: /readyz reports storage until it is reachable.
        log.exception("the bucket could not be checked or created")
    stop = threading.Event()
    reconciler = None
    if settings.reconcile_interval_s > 0:
        reconciler = threading.Thread(
            target=run_forever, args=(settings, stop), name="reconciler", daemon=True
        )
        reconciler.start()
    try:
        yield
    finally:
        stop.set()
        if reconciler is not None:
            reconciler.join(timeout=5)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="portrait-queue",
        summary="Self-hosted fal-ai/live-portrait/image behind fal's queue protocol",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.include_router(health.router)
    apps = [AppId.parse(app_id) for app_id in settings.app_id_list]
    seen_bases: set[str] = set()
    for app_id in apps:
        app.include_router(submit_router(app_id))
        app.include_router(run_router(app_id))
        if app_id.queue_base not in seen_bases:
            seen_bases.add(app_id.queue_base)
            app.include_router(requests_router(app_id))
    return app
