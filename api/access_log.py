"""One log line per HTTP call, carrying the request_id of the fal request it concerns.

A plain ASGI middleware (not BaseHTTPMiddleware) so that the context variable it binds is the
one the endpoint runs in: threadpool endpoints copy the context, so their own log lines carry
the id too. The id comes from the path (status, result, cancel, stream) or, for a submit, from
the `x-fal-request-id` header of the answer.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.log_context import bound_request_id

log = logging.getLogger("api.access")

_ID_IN_PATH = re.compile(r"/requests/([0-9a-fA-F-]{36})(?:/|$)")
# Probes and scrapes every few seconds would drown the useful lines.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        match = _ID_IN_PATH.search(path)
        answer: dict[str, Any] = {"status": 500, "request_id": match.group(1) if match else None}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-fal-request-id" and answer["request_id"] is None:
                        answer["request_id"] = value.decode("latin-1")
            await send(message)

        started = time.perf_counter()
        with bound_request_id(answer["request_id"]):
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                self._log(scope, path, answer, time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, path: str, answer: dict[str, Any], elapsed: float) -> None:
        level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
        with bound_request_id(answer["request_id"]):
            log.log(
                level,
                "%s %s %s",
                scope.get("method", ""),
                path,
                answer["status"],
                extra={
                    "http_method": scope.get("method", ""),
                    "http_path": path,
                    "http_status": answer["status"],
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )
