"""Which finished requests have outlived their retention, and marking their results expired."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.models import RequestRow, Status
from core.request_store import utcnow


def due_for_expiry(session: Session, default_retention_s: int, limit: int = 200) -> list[uuid.UUID]:
    kept_s = func.coalesce(RequestRow.retention_s, default_retention_s)
    return list(
        session.execute(
            select(RequestRow.id)
            .where(
                RequestRow.status == Status.COMPLETED.value,
                RequestRow.expired_at.is_(None),
                # make_interval(years, months, weeks, days, hours, mins, secs)
                RequestRow.finished_at + func.make_interval(0, 0, 0, 0, 0, 0, kept_s) < utcnow(),
            )
            .order_by(RequestRow.finished_at)
            .limit(limit)
        ).scalars()
    )


def mark_expired(session: Session, request_id: uuid.UUID) -> bool:
    """Drop the stored result; the row stays so that the result endpoint can answer 410."""
    done = session.execute(
        update(RequestRow)
        .where(RequestRow.id == request_id, RequestRow.expired_at.is_(None))
        .values(expired_at=utcnow(), output=None)
        .returning(RequestRow.id)
    ).scalar_one_or_none()
    return done is not None
