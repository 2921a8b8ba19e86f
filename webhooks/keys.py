"""The service's Ed25519 webhook keys: the one that signs, and the public ones in the JWKS.

The signing key comes from WEBHOOK_SIGNING_KEY when set; otherwise it is generated once and kept
in PostgreSQL, so every API and dispatcher process, on any machine, signs with the same key and
publishes the same JWKS. Rotation retires the signing key (it stays in the JWKS for
WEBHOOK_KEY_GRACE_S, for receivers that cached the JWKS) and makes a new one.

    python -m webhooks.keys show       # the JWKS
    python -m webhooks.keys rotate     # new signing key; the old one is published for the grace
    python -m webhooks.keys generate   # print a new key for WEBHOOK_SIGNING_KEY (touches nothing)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db import session_scope
from core.webhook_models import WebhookSigningKey

_ROTATE_LOCK = 0x77686B72  # arbitrary, constant: "whkr"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_private(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def kid_for(public: bytes) -> str:
    # RFC 7638 thumbprint: derived from the key itself, so every process names it alike.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(public)}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


@lru_cache
def parse_private_key(value: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) Ed25519 key, or base64/base64url of its raw 32-byte seed."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("WEBHOOK_SIGNING_KEY is a PEM key but not an Ed25519 one")
        return key
    try:
        seed = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("WEBHOOK_SIGNING_KEY is neither PEM nor base64") from exc
    if len(seed) != 32:
        raise ValueError("WEBHOOK_SIGNING_KEY must be a 32-byte Ed25519 seed (base64) or a PEM key")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _now() -> datetime:
    return datetime.now(UTC)


def _insert_new(session: Session) -> None:
    private = Ed25519PrivateKey.generate()
    public = raw_public(private)
    # ON CONFLICT DO NOTHING on the one-active index: of concurrent first generations, one wins.
    session.execute(
        insert(WebhookSigningKey)
        .values(
            kid=kid_for(public),
            private_key=raw_private(private),
            public_key=public,
            active=True,
            created_at=_now(),
        )
        .on_conflict_do_nothing()
    )


def _active(session: Session) -> WebhookSigningKey | None:
    return session.execute(select(WebhookSigningKey).where(WebhookSigningKey.active)).scalar_one_or_none()


def signing_key(session: Session, settings: Settings) -> SigningKey:
    if settings.webhook_signing_key:
        private = parse_private_key(settings.webhook_signing_key)
        return SigningKey(kid_for(raw_public(private)), private)
    row = _active(session)
    if row is None:
        _insert_new(session)
        row = _active(session)
        assert row is not None  # inserted here or by the concurrent winner
    return SigningKey(row.kid, Ed25519PrivateKey.from_private_bytes(row.private_key))


def published_keys(session: Session, settings: Settings) -> list[tuple[str, bytes]]:
    """(kid, raw public key) of the signing key and of keys retired less than the grace ago."""
    current = signing_key(session, settings)
    keys = [(current.kid, raw_public(current.private))]
    cutoff = _now() - timedelta(seconds=settings.webhook_key_grace_s)
    retired = session.execute(
        select(WebhookSigningKey.kid, WebhookSigningKey.public_key)
        .where(~WebhookSigningKey.active, WebhookSigningKey.retired_at > cutoff)
        .order_by(WebhookSigningKey.retired_at.desc())
    ).all()
    keys.extend((kid, bytes(public)) for kid, public in retired if kid != current.kid)
    return keys


def jwks(keys: list[tuple[str, bytes]]) -> dict[str, Any]:
    return {
        "keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b64url(public), "kid": kid, "use": "sig", "alg": "EdDSA"}
            for kid, public in keys
        ]
    }


def rotate(session: Session, settings: Settings) -> str:
    """Retire the stored signing key and make a new one; returns the new kid."""
    if settings.webhook_signing_key:
        raise RuntimeError("WEBHOOK_SIGNING_KEY is set: rotate by changing that setting instead")
    session.execute(select(func.pg_advisory_xact_lock(_ROTATE_LOCK)))
    now = _now()
    session.execute(
        update(WebhookSigningKey).where(WebhookSigningKey.active).values(active=False, retired_at=now)
    )
    # Private keys past their grace are of no further use: do not keep them around.
    session.execute(
        delete(WebhookSigningKey).where(
            ~WebhookSigningKey.active,
            WebhookSigningKey.retired_at < now - timedelta(seconds=settings.webhook_key_grace_s),
        )
    )
    _insert_new(session)
    row = _active(session)
    assert row is not None
    return row.kid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["show", "rotate", "generate"])
    args = parser.parse_args()
    if args.action == "generate":
        print(base64.b64encode(raw_private(Ed25519PrivateKey.generate())).decode())
        return
    settings = get_settings()
    with session_scope() as session:
        if args.action == "rotate":
            print(f"new signing key: {rotate(session, settings)}")
        else:
            print(json.dumps(jwks(published_keys(session, settings)), indent=2))


if __name__ == "__main__":
    main()
