"""Every read and state change of a request row. All transitions are single conditional UPDATEs,
so concurrent API processes, workers and reconcilers never step on each other."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from core import webhook_outbox
from core.config import get_settings
from core.failures import Failure
from core.models import RequestRow, Status


def utcnow() -> datetime:
    return datetime.now(UTC)


def log_entry(message: str, level: str = "INFO", at: datetime | None = None) -> dict[str, Any]:
    """One log line in the shape fal's clients parse."""
    return {
        "message": message,
        "level": level,
        "source": "USER",
        "timestamp": (at or utcnow()).isoformat(),
    }


def create(
    session: Session,
    *,
    app_id: str,
    payload: dict[str, Any],
    priority: int,
    webhook_url: str | None = None,
    start_deadline: datetime | None = None,
    owner_key_id: str | None = None,
    retention_s: int | None = None,
) -> RequestRow:
    row = RequestRow(
        id=uuid.uuid4(),
        app_id=app_id,
        status=Status.IN_QUEUE.value,
        priority=priority,
        input=payload,
        webhook_url=webhook_url,
        start_deadline=start_deadline,
        owner_key_id=owner_key_id,
        retention_s=retention_s,
        queued_at=utcnow(),
        logs=[],
    )
    session.add(row)
    session.flush()
    return row


def get(session: Session, request_id: uuid.UUID) -> RequestRow | None:
    return session.get(RequestRow, request_id)


def queue_position(session: Session, row: RequestRow) -> int:
    """Waiting requests that run before this one: higher priority first, then older first."""
    ahead = (
        select(func.count())
        .select_from(RequestRow)
        .where(
            RequestRow.status == Status.IN_QUEUE.value,
            or_(
                RequestRow.priority < row.priority,
                and_(
                    RequestRow.priority == row.priority,
                    tuple_(RequestRow.queued_at, RequestRow.id) < tuple_(row.queued_at, row.id),
                ),
            ),
        )
    )
    return int(session.execute(ahead).scalar_one())


def mark_published(session: Session, request_id: uuid.UUID) -> None:
    session.execute(
        update(RequestRow)
        .where(RequestRow.id == request_id, RequestRow.status == Status.IN_QUEUE.value)
        .values(published_at=utcnow())
    )


def claim(
    session: Session, request_id: uuid.UUID, *, worker: str, lease_s: int, max_attempts: int | None = None
) -> RequestRow | None:
    """Take the request for this worker, or None if someone else has it or it is finished.

    A running request whose lease ran out (its worker died) can be claimed again; `attempts` is
    the fencing token that keeps the old worker from completing it afterwards. A request that
    has used `max_attempts` runs is never claimed again (`give_up_expired` fails it), so
    `attempts` counts real runs even when a redelivered message races the reconciler.
    """
    now = utcnow()
    limit = (RequestRow.attempts < max_attempts,) if max_attempts is not None else ()
    stmt = (
        update(RequestRow)
        .where(
            RequestRow.id == request_id,
            *limit,
            or_(
                RequestRow.status == Status.IN_QUEUE.value,
                and_(
                    RequestRow.status == Status.IN_PROGRESS.value,
                    RequestRow.lease_expires_at < now,
                ),
            ),
        )
        .values(**_claimed(worker, lease_s))
        .returning(RequestRow)
    )
    return session.execute(stmt).scalar_one_or_none()


def _claimed(worker: str, lease_s: int) -> dict[str, Any]:
    """The columns a claim sets: running, by this worker, one more attempt, a fresh lease."""
    now = utcnow()
    return {
        "status": Status.IN_PROGRESS.value,
        "started_at": now,
        "worker": worker,
        "attempts": RequestRow.attempts + 1,
        "lease_expires_at": now + timedelta(seconds=lease_s),
    }


def claim_waiting(
    session: Session, *, worker: str, lease_s: int, max_attempts: int, limit: int
) -> list[RequestRow]:
    """Claim up to `limit` waiting requests, highest priority then oldest first, skipping rows
    that other workers are claiming at this moment (their messages then find nothing to run)."""
    waiting = (
        select(RequestRow.id)
        .where(RequestRow.status == Status.IN_QUEUE.value, RequestRow.attempts < max_attempts)
        .order_by(RequestRow.priority, RequestRow.queued_at, RequestRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(RequestRow)
        .where(RequestRow.id.in_(waiting.scalar_subquery()), RequestRow.status == Status.IN_QUEUE.value)
        .values(**_claimed(worker, lease_s))
        .returning(RequestRow)
        .execution_options(synchronize_session=False)
    )
    return list(session.execute(stmt).scalars())


def renew_lease(session: Session, request_id: uuid.UUID, attempt: int, *, lease_s: int) -> bool | None:
    """Extend the lease; returns whether cancellation was requested, None if the claim was lost."""
    stmt = (
        update(RequestRow)
        .where(
            RequestRow.id == request_id,
            RequestRow.status == Status.IN_PROGRESS.value,
            RequestRow.attempts == attempt,
        )
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .returning(RequestRow.cancel_requested)
    )
    return session.execute(stmt).scalar_one_or_none()


def append_logs(session: Session, request_id: uuid.UUID, entries: list[dict[str, Any]]) -> None:
    # JSONB concatenation appends in place, so concurrent readers always see a prefix.
    session.execute(
        update(RequestRow)
        .where(RequestRow.id == request_id)
        .values(logs=RequestRow.logs.op("||", return_type=JSONB)(literal(entries, JSONB)))
    )


def complete_ok(
    session: Session,
    request_id: uuid.UUID,
    attempt: int,
    *,
    output: dict[str, Any],
    metrics: dict[str, Any],
) -> bool:
    return _finish(
        session,
        request_id,
        (RequestRow.attempts == attempt, RequestRow.status == Status.IN_PROGRESS.value),
        output=output,
        metrics=metrics,
    )


def complete_failed(
    session: Session,
    request_id: uuid.UUID,
    failure: Failure,
    *,
    attempt: int | None = None,
    metrics: dict[str, Any] | None = None,
) -> bool:
    """Fail the request; with `attempt`, only if that claim still holds it."""
    conditions: tuple[Any, ...] = (RequestRow.status != Status.COMPLETED.value,)
    if attempt is not None:
        # The claim must still hold it: a request the reconciler put back in the queue (its lease
        # ran out while this worker was cut off) is no longer this worker's to fail.
        conditions = (
            *conditions,
            RequestRow.attempts == attempt,
            RequestRow.status == Status.IN_PROGRESS.value,
        )
    return _finish(
        session,
        request_id,
        conditions,
        error=failure.message,
        error_type=failure.error_type,
        error_status=failure.status_code,
        error_body=failure.body,
        metrics=metrics,
    )


def _finish(session: Session, request_id: uuid.UUID, conditions: tuple[Any, ...], **values: Any) -> bool:
    """The one way into COMPLETED: the webhook delivery, if any, joins this same transaction."""
    stmt = (
        update(RequestRow)
        .where(RequestRow.id == request_id, *conditions)
        .values(status=Status.COMPLETED.value, finished_at=utcnow(), lease_expires_at=None, **values)
        .returning(*webhook_outbox.COMPLETION_COLUMNS)
    )
    done = session.execute(stmt).one_or_none()
    if done is None:
        return False
    if done.webhook_url:
        webhook_outbox.enqueue(
            session, webhook_outbox.completion_of(done), user_id=get_settings().webhook_user_id
        )
    return True


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # was waiting: it will never run
    REQUESTED = "requested"  # is running: the worker stops at its next check
    ALREADY_COMPLETED = "already_completed"
    NOT_FOUND = "not_found"


def cancel(session: Session, request_id: uuid.UUID, failure: Failure) -> CancelOutcome:
    waiting = _finish(
        session,
        request_id,
        (RequestRow.status == Status.IN_QUEUE.value,),
        cancel_requested=True,
        error=failure.message,
        error_type=failure.error_type,
        error_status=failure.status_code,
        error_body=failure.body,
    )
    if waiting:
        return CancelOutcome.CANCELLED
    running = session.execute(
        update(RequestRow)
        .where(RequestRow.id == request_id, RequestRow.status == Status.IN_PROGRESS.value)
        .values(cancel_requested=True)
        .returning(RequestRow.id)
    ).scalar_one_or_none()
    if running is not None:
        return CancelOutcome.REQUESTED
    exists = session.execute(select(RequestRow.id).where(RequestRow.id == request_id)).scalar_one_or_none()
    return CancelOutcome.ALREADY_COMPLETED if exists is not None else CancelOutcome.NOT_FOUND


@dataclass(frozen=True)
class Stale:
    unpublished: list[tuple[uuid.UUID, int]]  # (id, priority) of waiting rows to publish again
    lease_expired: list[uuid.UUID]  # running rows whose worker stopped renewing


def find_stale(
    session: Session, *, publish_grace_s: float, republish_after_s: float, limit: int = 500
) -> Stale:
    now = utcnow()
    waiting = session.execute(
        select(RequestRow.id, RequestRow.priority)
        .where(
            RequestRow.status == Status.IN_QUEUE.value,
            or_(
                and_(
                    RequestRow.published_at.is_(None),
                    RequestRow.queued_at < now - timedelta(seconds=publish_grace_s),
                ),
                RequestRow.published_at < now - timedelta(seconds=republish_after_s),
            ),
        )
        .order_by(RequestRow.priority, RequestRow.queued_at)
        .limit(limit)
    ).all()
    expired = session.execute(
        select(RequestRow.id)
        .where(RequestRow.status == Status.IN_PROGRESS.value, RequestRow.lease_expires_at < now)
        .limit(limit)
    ).scalars()
    return Stale(unpublished=[(r.id, r.priority) for r in waiting], lease_expired=list(expired))


def requeue_expired(session: Session, request_id: uuid.UUID) -> int | None:
    """Put a running request whose lease expired back in the queue; returns its priority."""
    stmt = (
        update(RequestRow)
        .where(
            RequestRow.id == request_id,
            RequestRow.status == Status.IN_PROGRESS.value,
            RequestRow.lease_expires_at < utcnow(),
        )
        .values(status=Status.IN_QUEUE.value, lease_expires_at=None, worker=None, published_at=None)
        .returning(RequestRow.priority)
    )
    return session.execute(stmt).scalar_one_or_none()


def give_up_expired(session: Session, request_id: uuid.UUID, failure: Failure, *, max_attempts: int) -> bool:
    """Fail a running request whose lease expired once it has used up its attempts, instead of
    queueing it again: a request that kills every worker that runs it must not loop forever."""
    return _finish(
        session,
        request_id,
        (
            RequestRow.status == Status.IN_PROGRESS.value,
            RequestRow.lease_expires_at < utcnow(),
            RequestRow.attempts >= max_attempts,
        ),
        error=failure.message,
        error_type=failure.error_type,
        error_status=failure.status_code,
        error_body=failure.body,
    )


def expire_unstarted(session: Session, failure: Failure, limit: int = 500) -> int:
    """Fail waiting requests whose X-Fal-Request-Timeout passed, even when no worker is free to
    notice (a worker that claims one in time refuses it the same way)."""
    now = utcnow()
    late = session.execute(
        select(RequestRow.id)
        .where(RequestRow.status == Status.IN_QUEUE.value, RequestRow.start_deadline < now)
        .limit(limit)
    ).scalars()
    return sum(
        _finish(
            session,
            request_id,
            (RequestRow.status == Status.IN_QUEUE.value, RequestRow.start_deadline < now),
            error=failure.message,
            error_type=failure.error_type,
            error_status=failure.status_code,
            error_body=failure.body,
        )
        for request_id in list(late)
    )
