"""Shared pieces of the storage routes: limits, bounded body reads, upload auth, error replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from api.auth import UNAUTHORIZED, authenticate
from core.config import Settings, get_settings
from storage.s3 import get_store
from storage.signing import check_token, signing_secret
from storage.uploads import UploadPolicy, UploadRejected, Uploads

CDN_TOKEN_PURPOSE = "cdn-token"


@dataclass(frozen=True)
class UploadContext:
    settings: Settings
    policy: UploadPolicy
    uploads: Uploads
    secret: bytes


def upload_context() -> UploadContext:
    settings = get_settings()
    return UploadContext(
        settings=settings,
        policy=UploadPolicy.from_settings(settings),
        uploads=Uploads(get_store()),
        secret=signing_secret(settings),
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes max_bytes (never fully buffered)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise UploadRejected(413, f"the file is too large (the limit is {max_bytes} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise UploadRejected(413, f"the file is too large (the limit is {max_bytes} bytes)")
    return bytes(body)


async def require_upload_auth(ctx: UploadContext, authorization: str | None) -> None:
    """The CDN routes take the bearer token from /storage/auth/token, or an API key itself."""
    if ctx.settings.auth_mode == "off":
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and check_token(ctx.secret, CDN_TOKEN_PURPOSE, token.strip()):
        return
    if await authenticate(authorization, ctx.settings) is None:
        raise UploadRejected(401, UNAUTHORIZED)


def rejected_response(exc: UploadRejected) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def replies_rejections(
    handler: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """Turn UploadRejected into its JSON reply (routers cannot carry exception handlers)."""

    @wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except UploadRejected as exc:
            return rejected_response(exc)

    return wrapper
