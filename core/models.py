"""The requests table's schema (a row per request, the source of truth for status, queue order
and results), its status and priority values, and the declarative Base that every table's model
derives from. The table's reads and writes are in core/requests_table/."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Status(enum.StrEnum):
    # fal's clients know these three only; failures and cancellations are COMPLETED + error.
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


class Priority(enum.IntEnum):
    # Lower runs first, matching the order the workers consume their queues in.
    NORMAL = 0
    LOW = 1


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    app_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=Status.IN_QUEUE.value)
    priority: Mapped[int] = mapped_column(SmallInteger, default=Priority.NORMAL.value)
    # None once a request submitted with X-Fal-Store-IO: 0 has ended.
    input: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # The API key that submitted it (None with AUTH_MODE=off): only that key may see it.
    owner_key_id: Mapped[str | None] = mapped_column(String(64))
    # How long the result is kept after the request ended; None: RESULT_RETENTION_S.
    retention_s: Mapped[int | None] = mapped_column(Integer)
    # When the result (output files, result body, stored input) is due for deletion: the
    # completion sets it from retention_s or RESULT_RETENTION_S, so the sweep reads an index.
    result_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the retention sweep deleted the result and its files.
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Past this instant a request that has not started fails with request_timeout.
    start_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # X-Fal-No-Retry: a lost worker fails the request (runner_disconnected) instead of a rerun.
    no_retry: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # X-Fal-Store-IO: 0 makes this false: input and logs are dropped once the request ends.
    store_io: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")

    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    logs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB, default=list, server_default="[]")

    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(64))
    # The HTTP status and body the result endpoint replays for a failed request.
    error_status: Mapped[int | None] = mapped_column(SmallInteger)
    error_body: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # "user" when the failure is the caller's X-Fal-Request-Timeout running out.
    timeout_type: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        CheckConstraint(
            "status IN ('IN_QUEUE', 'IN_PROGRESS', 'COMPLETED')",
            name="requests_status_valid",
        ),
        # Queue positions and the reconciler only ever look at waiting rows.
        Index(
            "requests_waiting_order",
            "priority",
            "queued_at",
            postgresql_where=text("status = 'IN_QUEUE'"),
        ),
        # ?fal_max_queue_length: the waiting requests of one endpoint, counted up to the limit.
        Index("requests_waiting_app", "app_id", "id", postgresql_where=text("status = 'IN_QUEUE'")),
        # X-Fal-Store-IO: 0 requests that ended with their input still there, for its backstop.
        Index(
            "requests_input_unforgotten",
            "id",
            postgresql_where=text("status = 'COMPLETED' AND NOT store_io AND input IS NOT NULL"),
        ),
        # Per-key limits: submissions in the last minute (a range of recent rows) ...
        Index("requests_owner_recent", "owner_key_id", "queued_at"),
        # ... and requests in flight, without reading the key's finished history.
        Index(
            "requests_unfinished_owner",
            "owner_key_id",
            postgresql_where=text("status <> 'COMPLETED'"),
        ),
        # The result sweep reads finished rows whose result is still there, oldest due first.
        Index(
            "requests_result_due",
            "result_expires_at",
            postgresql_where=text("status = 'COMPLETED' AND expired_at IS NULL"),
        ),
        # The row sweep reads rows whose result is gone, oldest finished first.
        Index(
            "requests_row_due",
            "finished_at",
            postgresql_where=text("status = 'COMPLETED' AND expired_at IS NOT NULL"),
        ),
        Index(
            "requests_running_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'IN_PROGRESS'"),
        ),
    )
