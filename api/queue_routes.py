"""fal's queue API for one owner/alias: submit, status, status stream, result, cancel."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api import request_service
from api.app_ids import AppId
from api.auth import AuthCaller, Caller, require_key
from api.errors import DB_RETRY_AFTER_S
from api.public_url import public_base_url
from api.request_options import (
    SubmitOptions,
    idempotency_key,
    max_queue_length,
    no_retry,
    object_retention,
    queue_priority,
    start_deadline,
    store_io,
    webhook_url,
)
from api.schemas import (
    CancelResponse,
    LivePortraitImageOutput,
    LivePortraitInput,
    QueueStatus,
    SubmitResponse,
)
from api.status_view import (
    REQUEST_ID_HEADER,
    RequestUrls,
    request_headers,
    result_response,
    status_body,
    status_code_for,
)
from core.config import get_settings
from core.models import Status
from core.requests_table import CancelOutcome, RequestView

_NOT_FOUND = {"detail": "Request not found"}

LogsFlag = Annotated[bool, Query(description="Include log lines (1/0/true/false).", examples=[True])]


def _not_found() -> JSONResponse:
    return JSONResponse(_NOT_FOUND, status_code=404)


def _expired(request_id: Any) -> JSONResponse:
    # 410, not 404: the request existed and finished; its retention (RESULT_RETENTION_S or the
    # x-fal-object-lifecycle-preference it was submitted with) has passed.
    return JSONResponse(
        {"detail": "The result of this request has expired and was deleted", "error_type": "result_expired"},
        status_code=410,
        headers={REQUEST_ID_HEADER: str(request_id)},
    )


def _urls(request: Request, app: AppId, request_id: str) -> RequestUrls:
    return RequestUrls.build(public_base_url(request), app.queue_base, request_id)


# The replies of submit, status and result, shared by the routes below and api.fast_path, which
# answers the same calls without FastAPI's routing when they need no validation error.


def refused_reply(refused: request_service.SubmitRefused) -> JSONResponse:
    """A submit refused before anything was stored: a bad input's 422 with the `detail` list a
    failed result would give, or a 503 clients retry."""
    failure = refused.failure
    headers = {"Retry-After": str(DB_RETRY_AFTER_S)} if failure.status_code == 503 else None
    return JSONResponse(failure.body, status_code=failure.status_code, headers=headers)


async def submit_reply(
    request: Request, app: AppId, body: LivePortraitInput, options: SubmitOptions, caller: Caller
) -> JSONResponse:
    try:
        submitted = await request_service.submit(app, body.model_dump(mode="json"), options, caller)
    except request_service.SubmitRefused as refused:
        return refused_reply(refused)
    view = submitted.view
    request_id = str(view.id)
    # A replay shows the request as it is now (its current status and queue position).
    content = status_body(view, _urls(request, app, request_id), logs=None)
    content["gateway_request_id"] = request_id
    headers = {REQUEST_ID_HEADER: request_id}
    if submitted.replayed:
        headers[request_service.REPLAYED_HEADER] = "true"
    return JSONResponse(content, headers=headers)


async def status_reply(
    request: Request, app: AppId, request_id: str, caller: Caller, logs: bool
) -> JSONResponse:
    rid = request_service.parse_request_id(request_id)
    view = await request_service.load(app, rid, caller, with_logs=logs) if rid else None
    if view is None:
        return _not_found()
    content = status_body(
        view,
        _urls(request, app, request_id),
        logs=view.logs if logs else None,
    )
    return JSONResponse(content, status_code=status_code_for(view), headers=request_headers(view))


async def result_reply(app: AppId, request_id: str, caller: Caller) -> JSONResponse:
    rid = request_service.parse_request_id(request_id)
    view = await request_service.load(app, rid, caller) if rid else None
    if view is None:
        return _not_found()
    if view.expired_at is not None:
        return _expired(view.id)
    return result_response(view)


def submit_router(app: AppId) -> APIRouter:
    router = APIRouter(tags=[app.full], dependencies=[Depends(require_key)])

    @router.post(
        f"/{app.full}",
        summary=f"Submit a request to {app.full}",
        response_model=SubmitResponse,
        name=f"submit:{app.full}",
    )
    async def submit(
        request: Request,
        body: LivePortraitInput,
        priority: Annotated[int, Depends(queue_priority)],
        deadline: Annotated[Any, Depends(start_deadline)],
        webhook: Annotated[str | None, Depends(webhook_url)],
        retention_s: Annotated[int | None, Depends(object_retention)],
        key: Annotated[str | None, Depends(idempotency_key)],
        queue_limit: Annotated[int | None, Depends(max_queue_length)],
        no_retry_flag: Annotated[bool, Depends(no_retry)],
        store_io_flag: Annotated[bool, Depends(store_io)],
        caller: AuthCaller,
    ) -> JSONResponse:
        options = SubmitOptions(
            priority, deadline, webhook, retention_s, key, queue_limit, no_retry_flag, store_io_flag
        )
        return await submit_reply(request, app, body, options, caller)

    return router


def requests_router(app: AppId) -> APIRouter:
    router = APIRouter(
        prefix=f"/{app.queue_base}/requests",
        tags=[app.queue_base],
        dependencies=[Depends(require_key)],
    )

    @router.get(
        "/{request_id}/status",
        response_model=QueueStatus,
        responses={404: {"description": "Unknown request"}},
        name=f"status:{app.queue_base}",
    )
    async def status(
        request: Request, request_id: str, caller: AuthCaller, logs: LogsFlag = False
    ) -> JSONResponse:
        return await status_reply(request, app, request_id, caller, logs)

    @router.get(
        "/{request_id}/status/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 404: {"description": "Unknown request"}},
        name=f"status_stream:{app.queue_base}",
    )
    async def status_stream(
        request: Request, request_id: str, caller: AuthCaller, logs: LogsFlag = False
    ) -> Response:
        rid = request_service.parse_request_id(request_id)
        first = await request_service.load(app, rid, caller, with_logs=True) if rid else None
        if first is None or rid is None:
            return _not_found()
        urls = _urls(request, app, request_id)
        return StreamingResponse(
            _status_events(request, app, rid, urls, first, logs, caller),
            media_type="text/event-stream",
            # A stream opened on a request that already ended names its timeout type; one that
            # ends later carries it in the result its client then fetches.
            headers={**request_headers(first), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get(
        "/{request_id}",
        response_model=LivePortraitImageOutput,
        responses={
            400: {"description": "Still in progress"},
            404: {"description": "Unknown request"},
            410: {"description": "The result expired and was deleted"},
            422: {"description": "The request failed on its input"},
        },
        name=f"result:{app.queue_base}",
    )
    async def result(request_id: str, caller: AuthCaller) -> JSONResponse:
        return await result_reply(app, request_id, caller)

    @router.put(
        "/{request_id}/cancel",
        status_code=202,
        response_model=CancelResponse,
        responses={400: {"description": "Already completed"}, 404: {"description": "Unknown request"}},
        name=f"cancel:{app.queue_base}",
    )
    async def cancel(request_id: str, caller: AuthCaller) -> JSONResponse:
        rid = request_service.parse_request_id(request_id)
        outcome = await request_service.request_cancel(app, rid, caller) if rid else CancelOutcome.NOT_FOUND
        headers = {REQUEST_ID_HEADER: request_id}
        if outcome is CancelOutcome.NOT_FOUND:
            return JSONResponse({"status": "NOT_FOUND", **_NOT_FOUND}, status_code=404)
        if outcome is CancelOutcome.ALREADY_COMPLETED:
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400, headers=headers)
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202, headers=headers)

    return router


async def _status_events(
    request: Request,
    app: AppId,
    request_id: Any,
    urls: RequestUrls,
    view: RequestView,
    with_logs: bool,
    caller: Caller,
) -> AsyncIterator[str]:
    """One event per change (status, position or new log lines), a repeat every keepalive, and
    the COMPLETED event last: closing the stream is the JS client's signal that it is done."""
    settings = get_settings()
    sent_logs = 0
    last_key: tuple[Any, ...] | None = None
    last_sent = 0.0
    while True:
        logs = view.logs or []
        new_logs = logs[sent_logs:]
        key = (view.status, view.queue_position)
        now = time.monotonic()
        if key != last_key or new_logs or now - last_sent >= settings.status_stream_keepalive_s:
            # None once an X-Fal-Store-IO: 0 request has ended: its logs are gone, as on status.
            shown = new_logs if view.logs is not None else None
            body = status_body(view, urls, logs=shown if with_logs else None)
            yield f"data: {json.dumps(body)}\n\n"
            sent_logs, last_key, last_sent = len(logs), key, now
        if view.status == Status.COMPLETED:
            return
        await asyncio.sleep(settings.status_stream_poll_s)
        if await request.is_disconnected():
            return
        latest = await request_service.load(app, request_id, caller, with_logs=True)
        if latest is None:
            return
        view = latest
