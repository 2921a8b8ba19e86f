"""The idempotency_keys table: which request an (API key, Idempotency-Key) pair created.

The primary key makes PostgreSQL the arbiter between concurrent submits with one key, on any
number of API replicas; an entry lives IDEMPOTENCY_TTL_S and is deleted with its request.

The API reads and claims entries over asyncpg (its submit path); the result sweep deletes
expired ones over SQLAlchemy, in batches, through idempotency_keys_expiry.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import DateTime, ForeignKey, Index, LargeBinary, String, Uuid, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.clock import utcnow
from core.models import Base

# The owner of entries made with AUTH_MODE=off, where no API key identifies the caller.
ANONYMOUS_OWNER = ""


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of the endpoint and the validated body: a reuse with another body is refused.
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("requests.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("idempotency_keys_expiry", "expires_at"),
        Index("idempotency_keys_request", "request_id"),
    )


def fingerprint(app_id: str, mode: str, body: dict[str, Any]) -> bytes:
    """What a reuse of a key must repeat: the endpoint, how it was called (queue or run) and the
    validated body, as canonical JSON (sorted keys, so a client's key order does not matter;
    defaults filled in, so an omitted default equals the default sent)."""
    digest = hashlib.sha256()
    digest.update(f"{mode}\n{app_id}\n".encode())
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return digest.digest()


@dataclass(frozen=True)
class Entry:
    fingerprint: bytes
    request_id: uuid.UUID


# The primary key's one entry; an expired one is as good as none (the sweep deletes it later).
LOOKUP_SQL = (
    "SELECT fingerprint, request_id FROM idempotency_keys WHERE owner = $1 AND key = $2 AND expires_at > $3"
)

# Takes the key, or an expired entry of it, in the submitting transaction. A concurrent submit's
# uncommitted entry makes this wait on the primary key until that one commits (then nothing
# is returned: the other submit won) or rolls back (then this one takes the key).
CLAIM_SQL = """
INSERT INTO idempotency_keys AS k (owner, key, fingerprint, request_id, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (owner, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, request_id = EXCLUDED.request_id,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE k.expires_at <= EXCLUDED.created_at
RETURNING request_id
"""


async def lookup(conn: asyncpg.Connection, owner: str, key: str, now: datetime) -> Entry | None:
    record = await conn.fetchrow(LOOKUP_SQL, owner, key, now)
    return None if record is None else Entry(bytes(record["fingerprint"]), record["request_id"])


async def claim(
    conn: asyncpg.Connection,
    *,
    owner: str,
    key: str,
    fingerprint: bytes,
    request_id: uuid.UUID,
    now: datetime,
    ttl_s: int,
) -> bool:
    """Record that this key made `request_id`, inside the transaction that inserted it; False
    when another submit holds the key (roll the transaction back then)."""
    won = await conn.fetchval(
        CLAIM_SQL, owner, key, fingerprint, request_id, now, now + timedelta(seconds=ttl_s)
    )
    return won is not None


# Oldest first through idempotency_keys_expiry; SKIP LOCKED lets every replica's sweep take its
# own batch, and never waits on a submit that is taking an expired entry over.
_DELETE_EXPIRED = text(
    """
    WITH due AS (
        SELECT owner, key FROM idempotency_keys
        WHERE expires_at <= :now
        ORDER BY expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM idempotency_keys k USING due WHERE k.owner = due.owner AND k.key = due.key
    """
)


def delete_expired(session: Session, limit: int, now: datetime | None = None) -> int:
    """Delete up to `limit` expired entries in the caller's transaction; returns how many."""
    result: Any = session.execute(_DELETE_EXPIRED, {"now": now or utcnow(), "limit": limit})
    return int(result.rowcount)
