"""HMAC capabilities for uploads: signed upload URLs and the CDN tokens fal-client asks for.

fal's clients PUT to the `upload_url` they are given without any credentials (the JS client uses
plain fetch), so the URL itself must carry the permission, like a presigned S3 URL does. Signing
it here instead of presigning at S3 lets the service enforce size and content-type limits and
keeps working when S3 is only reachable from the service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from core.config import Settings


def signing_secret(settings: Settings) -> bytes:
    if settings.upload_signing_key:
        return settings.upload_signing_key.encode()
    # Every replica shares these already, so they sign and verify alike without new configuration.
    material = "\n".join(
        ["portrait-queue uploads", settings.s3_secret_key or "", settings.database_url, settings.s3_bucket]
    )
    return hashlib.sha256(material.encode()).digest()


def _mac(secret: bytes, purpose: str, fields: tuple[str, ...]) -> str:
    # The purpose is part of the message so that a token minted for one use is useless for another.
    message = "\n".join((purpose, *fields)).encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, purpose: str, expires_at: int, *fields: str) -> str:
    return _mac(secret, purpose, (str(expires_at), *fields))


def verify(secret: bytes, purpose: str, expires_at: int, signature: str, *fields: str) -> bool:
    if expires_at < time.time():
        return False
    # Bytes, not str: compare_digest refuses non-ASCII strings, and signatures arrive from
    # query strings that anyone can fill (found by the fuzzer).
    expected = sign(secret, purpose, expires_at, *fields).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def make_token(secret: bytes, purpose: str, ttl_s: int) -> tuple[str, int]:
    """An opaque bearer token `<expiry>.<mac>` and its expiry (Unix seconds)."""
    expires_at = int(time.time()) + ttl_s
    return f"{expires_at}.{sign(secret, purpose, expires_at)}", expires_at


def check_token(secret: bytes, purpose: str, token: str) -> bool:
    expiry, _, signature = token.partition(".")
    # isascii: str.isdigit() also accepts digits such as '²' that int() refuses.
    return expiry.isascii() and expiry.isdigit() and verify(secret, purpose, int(expiry), signature)
