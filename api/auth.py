"""fal's `Authorization: Key <key_id>:<secret>` check, and who the caller is.

AUTH_MODE=keys (the default): a key from PostgreSQL (`python -m api.keys`) or one of API_KEYS is
required, and the caller is its key id, which owns the requests it submits. AUTH_MODE=off: no
check, one anonymous caller who sees every request.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException

from core.api_keys import verify_key
from core.config import Settings, get_settings

UNAUTHORIZED = "No user found for Key ID and Secret"


@dataclass(frozen=True)
class Caller:
    # None only with AUTH_MODE=off.
    key_id: str | None

    def owns(self, owner_key_id: str | None) -> bool:
        return self.key_id is None or self.key_id == owner_key_id


ANONYMOUS = Caller(None)


async def authenticate(authorization: str | None, settings: Settings) -> Caller | None:
    """The caller for an Authorization header, or None when it names no valid key."""
    if settings.auth_mode == "off":
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    # fal-client also sends `Bearer <token>`; a key is accepted under either scheme.
    if scheme.lower() not in {"key", "bearer"} or ":" not in token:
        return None
    key_id, _, secret = token.partition(":")
    # Static keys: compare against each in constant time so timing does not reveal a prefix.
    if any(hmac.compare_digest(token.encode(), key.encode()) for key in settings.api_key_set):
        return Caller(key_id)
    if key_id and secret and len(key_id) <= 64 and await verify_key(key_id, secret):
        return Caller(key_id)
    return None


async def require_key(authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Caller:
    caller = await authenticate(authorization, get_settings())
    if caller is None:
        raise HTTPException(status_code=401, detail=UNAUTHORIZED)
    return caller


# A route parameter of this type gets the caller (FastAPI runs require_key once per request).
AuthCaller = Annotated[Caller, Depends(require_key)]
