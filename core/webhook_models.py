"""Webhook tables: the delivery outbox, its attempt log, and the Ed25519 signing keys.

A delivery row is inserted in the same transaction that completes its request, so a completed
request with a `fal_webhook` always has one, whatever crashes afterwards.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # attempts remain (or one is running)
    DELIVERED = "delivered"  # a 2xx answer was received
    FAILED = "failed"  # the schedule is exhausted; kept for inspection and redelivery


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    # Stable across every attempt: receivers deduplicate on it (X-Fal-Webhook-Delivery-Id).
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("requests.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(String(200))
    # The exact JSON sent on every attempt, fixed at completion time.
    body: Mapped[str] = mapped_column(Text)
    # Sent as X-Fal-Request-Timeout-Type ("user": the caller's X-Fal-Request-Timeout ran out).
    timeout_type: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Attempts since the delivery (re)started: the position in the retry schedule.
    round_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Set while a dispatcher runs an attempt; an expired lease means that dispatcher was lost.
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set while a broker message for the next attempt is in flight; cleared when one is claimed.
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="webhook_deliveries_state_valid"),
        Index("webhook_deliveries_request", "request_id"),
        # The sweep only ever looks at pending rows.
        Index(
            "webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Null while running (or forever, if its dispatcher died before the sweep noticed).
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("delivery_id", "number", name="webhook_attempts_number"),
        # Attempts running now (a /metrics gauge, and a claim closing a lost one) without the log.
        Index("webhook_attempts_open", "delivery_id", postgresql_where=text("finished_at IS NULL")),
    )


class WebhookSigningKey(Base):
    __tablename__ = "webhook_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # raw 32-byte Ed25519 seed
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # raw 32 bytes
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # At most one signing key: concurrent first generations race on this index, one wins.
        Index("webhook_signing_keys_one_active", "active", unique=True, postgresql_where=text("active")),
    )
