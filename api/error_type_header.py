"""X-Fal-Error-Type on every error answer, whichever part of the service gave it.

fal's Python client reads a failure's type from the body's `error_type` and else from this header;
FastAPI's own answers (404 routes, 405, 422 validation) and a few of ours carry neither. Rather
than each of them remembering it, this middleware names the type of any 4xx/5xx answer that lacks
the header: the body's `error_type`, else the first validation error's `type`, else one derived
from the status code. Successful answers pass through untouched, unbuffered.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ERROR_TYPE_HEADER = b"x-fal-error-type"
# Error bodies are small; past this the body streams on unread and the status decides.
_MAX_INSPECTED_BYTES = 64 * 1024

# fal's names where it has one (bad_request, internal_error, request_timeout ...).
_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    499: "client_disconnected",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "request_timeout",
}


def error_type_for(status: int, body: Any) -> str:
    if isinstance(body, dict):
        named = body.get("error_type")
        if isinstance(named, str) and named:
            return named
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0].get("type")
            if isinstance(first, str) and first:
                return first
    return _BY_STATUS.get(status, "internal_error" if status >= 500 else "bad_request")


class ErrorTypeHeaderMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # an error's response start, until its body is known
        chunks: list[bytes] = []
        size = 0

        async def wrapped(message: Message) -> None:
            nonlocal held, size
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if message["status"] < 400 or any(name.lower() == ERROR_TYPE_HEADER for name, _ in headers):
                    await send(message)
                else:
                    held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if more and size <= _MAX_INSPECTED_BYTES:
                return
            start, held = held, None
            body = b"".join(chunks)
            chunks.clear()
            await send(_with_type(start, body if not more else b""))
            await send({"type": "http.response.body", "body": body, "more_body": more})

        await self.app(scope, receive, wrapped)


def _with_type(start: Message, body: bytes) -> Message:
    try:
        document = json.loads(body) if body else None
    except ValueError:
        document = None
    error_type = error_type_for(start["status"], document)
    headers = [*start.get("headers", []), (ERROR_TYPE_HEADER, error_type.encode("latin-1", "replace"))]
    return {**start, "headers": headers}
