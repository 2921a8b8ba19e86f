"""The FastAPI application: fal's queue and run APIs for every configured endpoint id."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api import cdn_routes, errors, health, operations, storage_routes
from api.app_ids import AppId
from api.auth import require_key
from api.body_limits import BodyLimitMiddleware
from api.error_type_header import ErrorTypeHeaderMiddleware
from api.fal_proxy import FalProxyMiddleware
from api.fast_path import FastPathMiddleware
from api.queue_routes import requests_router, submit_router
from api.request_service import parse_request_id
from api.run_routes import run_router
from core.config import Settings, get_settings
from core.db_async import close_pool
from queueing.publish import background
from queueing.reconcile import run_forever
from storage import result_sweep, upload_sweep
from storage.s3 import get_store
from webhooks.routes import webhook_routers

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
    sweeper = None
    if settings.upload_sweep_interval_s > 0:
        sweeper = threading.Thread(
            target=upload_sweep.run_forever, args=(settings, stop), name="upload-sweep", daemon=True
        )
        sweeper.start()
    results = None
    if settings.retention_sweep_interval_s > 0:
        results = threading.Thread(
            target=result_sweep.run_forever, args=(settings, stop), name="result-sweep", daemon=True
        )
        results.start()
    try:
        yield
    finally:
        stop.set()
        for thread in (reconciler, sweeper, results):
            if thread is not None:
                thread.join(timeout=5)
        # What is still queued for publishing would otherwise wait for the reconciler.
        await run_in_threadpool(background.flush)
        await close_pool()


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
    app.include_router(storage_routes.router)
    app.include_router(cdn_routes.router)
    for router in webhook_routers(require_key, parse_request_id):
        app.include_router(router)
    apps = [AppId.parse(app_id) for app_id in settings.app_id_list]
    # Innermost: submit, status and result without FastAPI's routing (api/fast_path.py).
    app.add_middleware(FastPathMiddleware, apps=apps)
    # fal's server-proxy contract (/api/fal/proxy) for @fal-ai/client's proxyUrl.
    app.add_middleware(FalProxyMiddleware)
    # Oversized or trickled JSON bodies never reach a route (nor the proxy).
    app.add_middleware(BodyLimitMiddleware)
    # Around all of them: every error answer names its type, the body limit's 413 included.
    app.add_middleware(ErrorTypeHeaderMiddleware)
    errors.install(app)
    seen_bases: set[str] = set()
    for app_id in apps:
        app.include_router(submit_router(app_id))
        app.include_router(run_router(app_id))
        if app_id.queue_base not in seen_bases:
            seen_bases.add(app_id.queue_base)
            app.include_router(requests_router(app_id))
    # /metrics, the playground at / and the access log (README.md, "Operations").
    operations.install(app, settings)
    return app
