"""The idempotency_keys table: which request an (API key, Idempotency-Key) pair created.

The primary key makes PostgreSQL the arbiter between concurrent submits with one key, on any
number of API replicas; an entry lives IDEMPOTENCY_TTL_S and is deleted with its request.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

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
