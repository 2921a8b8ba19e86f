"""The externally visible base URL that status/response/cancel URLs are built on."""

from __future__ import annotations

from fastapi import Request

from core.config import get_settings


def public_base_url(request: Request) -> str:
    configured = get_settings().public_base_url
    if configured:
        return configured.rstrip("/")
    # Behind a proxy, uvicorn's --proxy-headers fixes the scheme; the Host header names the host.
    return str(request.base_url).rstrip("/")
