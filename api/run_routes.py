"""fal's synchronous API under /run/: the same queue and workers, the caller waits for the result.

The model only ever runs in workers, so a synchronous request is a queued request whose HTTP
call stays open; if the caller goes away (or waits too long) the request is cancelled, unless it
was sent with an Idempotency-Key: then it runs on, and a retry with that key waits for the same
request (and answers with its result exactly as the first call would have).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api import request_service
from api.app_ids import AppId
from api.auth import AuthCaller, require_key
from api.queue_routes import refused_reply
from api.request_options import (
    SubmitOptions,
    idempotency_key,
    max_queue_length,
    no_retry,
    object_retention,
    start_deadline,
    store_io,
)
from api.schemas import LivePortraitImageOutput, LivePortraitInput
from api.status_view import REQUEST_ID_HEADER, result_response
from core.config import get_settings
from core.models import Priority, Status

RUN_PREFIX = "/run"
_POLL_START_S = 0.05
_POLL_MAX_S = 0.5


def run_router(app: AppId) -> APIRouter:
    router = APIRouter(
        prefix=RUN_PREFIX, tags=[f"{app.full} (synchronous)"], dependencies=[Depends(require_key)]
    )

    @router.post(
        f"/{app.full}",
        response_model=LivePortraitImageOutput,
        responses={422: {"description": "Invalid input"}, 504: {"description": "Timed out"}},
        summary=f"Run {app.full} and wait for the result",
        name=f"run:{app.full}",
    )
    async def run(
        request: Request,
        body: LivePortraitInput,
        deadline: Annotated[Any, Depends(start_deadline)],
        retention_s: Annotated[int | None, Depends(object_retention)],
        key: Annotated[str | None, Depends(idempotency_key)],
        queue_limit: Annotated[int | None, Depends(max_queue_length)],
        no_retry_flag: Annotated[bool, Depends(no_retry)],
        store_io_flag: Annotated[bool, Depends(store_io)],
        caller: AuthCaller,
    ) -> JSONResponse:
        settings = get_settings()
        options = SubmitOptions(
            Priority.NORMAL.value, deadline, None, retention_s, key, queue_limit, no_retry_flag, store_io_flag
        )
        try:
            submitted = await request_service.submit(
                app, body.model_dump(mode="json"), options, caller, mode=request_service.RUN
            )
        except request_service.SubmitRefused as refused:
            return refused_reply(refused)
        request_id = submitted.view.id
        replay_headers = {request_service.REPLAYED_HEADER: "true"} if submitted.replayed else {}
        # With an Idempotency-Key the caller has said it will retry: going away, or waiting past
        # SYNC_RUN_TIMEOUT_S, leaves the request running, and the retry waits for it again.
        keep_running = key is not None
        give_up_at = time.monotonic() + settings.sync_run_timeout_s
        delay = _POLL_START_S
        # A replay's request may have ended already; a new one has only just been queued.
        latest = submitted.view if submitted.replayed else None
        while True:
            if latest is not None and latest.status == Status.COMPLETED:
                response = result_response(latest)
                response.headers.update(replay_headers)
                return response
            if await request.is_disconnected():
                if not keep_running:
                    await request_service.request_cancel(app, request_id, caller)
                return JSONResponse(
                    {"detail": "Client disconnected", "error_type": "client_disconnected"}, status_code=499
                )
            if time.monotonic() > give_up_at:
                if not keep_running:
                    await request_service.request_cancel(app, request_id, caller)
                return JSONResponse(
                    {"detail": "Request timed out", "error_type": "request_timeout"},
                    status_code=504,
                    headers={
                        REQUEST_ID_HEADER: str(request_id),
                        "x-fal-error-type": "request_timeout",
                        **replay_headers,
                    },
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX_S)
            latest = await request_service.load(app, request_id, caller)

    return router
