"""The `@fal-ai/server-proxy` contract, served by the service itself at /api/fal/proxy.

`@fal-ai/client` configured with `proxyUrl` sends every API call to the proxy URL with the real
target in `x-fal-target-url` (e.g. `https://queue.fal.run/fal-ai/live-portrait/requests/<id>/
status?logs=1`). Instead of forwarding to fal, this ASGI middleware rewrites the request's path and
query to the local route serving that target and hands it to the app in the same process, so
the method, headers, body and the streamed response (the SSE status stream) pass through as-is,
and each route applies its own auth exactly as when called directly.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.fal_targets import local_target
from core.config import get_settings

PROXY_PATH = "/api/fal/proxy"
TARGET_URL_HEADER = b"x-fal-target-url"
PROXY_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})


class FalProxyMiddleware:
    def __init__(self, app: ASGIApp, path: str = PROXY_PATH) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        target_url = next((value for name, value in headers if name == TARGET_URL_HEADER), None)
        if scope["method"] not in PROXY_METHODS:
            await _reply(send, 405, "Method not allowed")
            return
        # Like the official proxy: 400 "Invalid request" for a missing or not allowed target.
        target = local_target(target_url.decode("latin-1")) if target_url else None
        if target is None:
            await _reply(send, 400, "Invalid request: x-fal-target-url is missing or not a fal API URL")
            return
        if not any(name == b"authorization" for name, _ in headers):
            headers.extend(_server_credentials())
        local = dict(scope)
        local.update(
            path=target.path,
            raw_path=target.path.encode(),
            query_string=target.query.encode(),
            headers=headers,
        )
        await self.app(local, receive, send)


def _server_credentials() -> list[tuple[bytes, bytes]]:
    # fal's proxy adds `Key ${FAL_KEY}` for callers without credentials (browsers) when it allows
    # unauthenticated requests; here the first of API_KEYS plays FAL_KEY.
    settings = get_settings()
    keys = [item.strip() for item in settings.api_keys.split(",") if item.strip()]
    if settings.proxy_allow_unauthenticated and keys:
        return [(b"authorization", f"Key {keys[0]}".encode())]
    return []


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
