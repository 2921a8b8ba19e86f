"""The api_keys table and its data access: create, list, revoke, verify.

A key is `<key_id>:<secret>`, fal's FAL_KEY shape. Only SHA-256 of the secret is stored; the
secret is shown once, when the key is created. `python -m api.keys` and `portrait-queue keys`
manage keys through these functions; the API verifies them on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.db import session_scope
from core.db_async import connection
from core.models import Base


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the secret. The secret is 256 random bits, so a plain hash is as strong as a
    # slow KDF here (no dictionary to try) and keeps every authenticated call cheap.
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


_SECRET_BYTES = 32  # 256 bits: guessing is hopeless, so a fast hash is enough


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(name: str) -> tuple[str, str]:
    """A new key; returns (key_id, secret). Join them with ':' for the Authorization header."""
    key_id = str(uuid.uuid4())
    secret = secrets.token_hex(_SECRET_BYTES)
    with session_scope() as session:
        session.add(ApiKey(key_id=key_id, name=name, secret_sha256=_digest(secret), created_at=utcnow()))
    return key_id, secret


def list_keys() -> list[KeyInfo]:
    with session_scope() as session:
        rows = session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars().all()
        return [KeyInfo(r.key_id, r.name, r.created_at, r.revoked_at) for r in rows]


def revoke_key(key_id: str) -> bool:
    """Revoke a key at once (every later call with it is 401); False if unknown or already revoked."""
    with session_scope() as session:
        done = session.execute(
            update(ApiKey)
            .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(ApiKey.key_id)
        ).scalar_one_or_none()
    return done is not None


async def verify_key(key_id: str, secret: str) -> bool:
    """Whether key_id names an active key whose secret this is (constant-time comparison)."""
    # Looked up on every call, without a cache: a revoked key is refused at once.
    async with connection() as conn:
        stored = await conn.fetchval(
            "SELECT secret_sha256 FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
        )
    # Compare even for an unknown id, so that timing does not tell which ids exist.
    return hmac.compare_digest(_digest(secret), stored or b"\0" * 32) and stored is not None
