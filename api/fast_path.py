"""Submit, status and result without FastAPI's routing and dependency solving.

These three calls are nearly all of a queue API's traffic (clients poll status several times a
second), and FastAPI's per-call machinery cost several times the single SQL statement each one
needs. This middleware recognises them by path, checks the same headers and parameters with the
same functions, and answers with the same reply functions as the routes in api.queue_routes.
Anything unusual -- a body or header that fails validation, a missing or wrong key, an
unexpected content type, other paths -- goes on to FastAPI unchanged, so every error keeps the
exact shape FastAPI gives it and the routes stay the single definition (and the OpenAPI doc).
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.app_ids import AppId
from api.auth import Caller, authenticate
from api.body_limits import replaying
from api.errors import known_error_reply
from api.queue_routes import result_reply, status_reply, submit_reply
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
from api.schemas import LivePortraitInput
from core.config import get_settings

# Pydantic's lax booleans, as FastAPI reads `?logs=`.
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


class FastPathMiddleware:
    def __init__(self, app: ASGIApp, apps: list[AppId]) -> None:
        self.app = app
        self.submits = {f"/{a.full}": a for a in apps}
        self.queue_bases: dict[str, AppId] = {}
        for a in apps:  # the first endpoint of an owner/alias serves its requests routes
            self.queue_bases.setdefault(a.queue_base, a)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "GET" and "/requests/" in path:
                if await self._get(scope, receive, send, path):
                    return
            elif method == "POST" and path in self.submits:
                receive = await self._submit(scope, receive, send, self.submits[path])
                if receive is None:
                    return
        await self.app(scope, receive, send)

    async def _get(self, scope: Scope, receive: Receive, send: Send, path: str) -> bool:
        base, _, rest = path[1:].partition("/requests/")
        app = self.queue_bases.get(base)
        request_id, _, tail = rest.partition("/")
        if app is None or tail not in ("", "status") or "/" in request_id:
            return False
        logs = False
        if tail == "status":
            flag = _query(scope).get("logs")
            if flag is not None:
                if flag.lower() not in _TRUE | _FALSE:
                    return False
                logs = flag.lower() in _TRUE
        request = Request(scope, receive)
        try:
            caller = await _caller(_headers(scope))
            if caller is None:
                return False
            if tail == "status":
                response = await status_reply(request, app, request_id, caller, logs)
            else:
                response = await result_reply(app, request_id, caller)
        except Exception as exc:
            response = await _error_reply(request, exc)
        await response(scope, receive, send)
        return True

    async def _submit(self, scope: Scope, receive: Receive, send: Send, app: AppId) -> Receive | None:
        """None when answered; otherwise the receive to hand on (the body read here, replayed)."""
        headers = _headers(scope)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            return receive
        body = await _read_body(receive)
        if body is None:
            return None  # the client went away
        replay = replaying(body, receive)
        request = Request(scope, replay)
        try:
            caller = await _caller(headers)
        except Exception as exc:  # a key looked up in PostgreSQL while it is unreachable
            await (await _error_reply(request, exc))(scope, replay, send)
            return None
        if caller is None:
            return replay
        try:
            fields = LivePortraitInput.model_validate(json.loads(body))
            query = _query(scope)
            options = SubmitOptions(
                priority=await queue_priority(headers.get("x-fal-queue-priority")),
                start_deadline=await start_deadline(headers.get("x-fal-request-timeout")),
                webhook_url=await webhook_url(query.get("fal_webhook")),
                retention_s=await object_retention(headers.get("x-fal-object-lifecycle-preference")),
                idempotency_key=await idempotency_key(headers.get("idempotency-key")),
                max_queue_length=await max_queue_length(query.get("fal_max_queue_length")),
                no_retry=await no_retry(headers.get("x-fal-no-retry")),
                store_io=await store_io(headers.get("x-fal-store-io")),
            )
        except (ValueError, ValidationError, HTTPException):
            return replay  # FastAPI answers with its own 422 (or 400 for broken JSON)
        try:
            response = await submit_reply(request, app, fields, options, caller)
        except Exception as exc:
            response = await _error_reply(request, exc)
        await response(scope, replay, send)
        return None


async def _caller(headers: dict[str, str]) -> Caller | None:
    return await authenticate(headers.get("authorization"), get_settings())


async def _error_reply(request: Request, exc: Exception) -> JSONResponse:
    reply = await known_error_reply(request, exc)
    if reply is None:
        raise exc  # uvicorn logs it and answers 500, as for any route
    return reply


# The only headers these calls read (names as ASGI gives them: lower case).
_WANTED = frozenset(
    {
        b"authorization",
        b"content-type",
        b"x-fal-queue-priority",
        b"x-fal-request-timeout",
        b"x-fal-object-lifecycle-preference",
        b"idempotency-key",
        b"x-fal-no-retry",
        b"x-fal-store-io",
    }
)


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        # The first of repeated headers, as Starlette reads them.
        if name in _WANTED:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
