"""Request body limits: a size cap on JSON bodies (413) and a deadline to receive them (408).

JSON bodies (and bodies without a content type) are read here, whole, before the app sees them:
a client that declares or sends more than MAX_JSON_BODY_BYTES is refused without buffering the
rest, and one that trickles its body (slow loris) is cut off after BODY_READ_TIMEOUT_S instead of
holding a connection and its handler indefinitely. Upload bodies (image types) stream through
untouched: the upload routes enforce UPLOAD_MAX_BYTES themselves.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import get_settings

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        try:
            body = await _read(scope, receive, settings.max_json_body_bytes, settings.body_read_timeout_s)
        except _Refused as refused:
            await _reply(send, refused.status, refused.detail)
            return
        if body is None:
            return  # the client went away: nobody to answer
        await self.app(scope, replaying(body, receive), send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then what the client sends next (its
    disconnect), as uvicorn's own would."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _is_json(scope: Scope) -> bool:
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"").decode("latin-1")
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "" or media == "application/json" or media.endswith("+json")


async def _read(scope: Scope, receive: Receive, limit: int, timeout_s: float) -> bytes | None:
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
    too_large = _Refused(413, f"Request body too large (the limit is {limit} bytes)")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.001))
        except TimeoutError:
            raise _Refused(408, f"Request body not received within {timeout_s:g} s") from None
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            # The rest of the body is never read, so the connection cannot be reused.
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
