"""fal's `Authorization: Key <key_id:key_secret>` check, on when API_KEYS is set."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Header, HTTPException

from core.config import get_settings


def require_key(authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> None:
    keys = get_settings().api_key_set
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    # Compare against every key in constant time so timing does not reveal a prefix.
    valid = scheme.lower() in {"key", "bearer"} and any(
        hmac.compare_digest(token.encode(), key.encode()) for key in keys
    )
    if not valid:
        raise HTTPException(status_code=401, detail="No user found for Key ID and Secret")
