"""What the reconciler finds and repairs in the requests table: waiting rows whose publish was
lost, running rows whose worker stopped renewing its lease, and waiting rows past their start
deadline. Each repair is one conditional statement, so reconcilers on several replicas may race.

A running request submitted with X-Fal-No-Retry whose worker is lost is failed instead of
queued again, by whichever notices first: the dead process's own Celery parent
(`fail_no_retry_of_worker`), a redelivered message or the reconciler once the lease ran out
(`fail_no_retry_expired`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.failures import Failure
from core.models import RequestRow, Status
from core.requests_table.completion import failure_columns, finish


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
            RequestRow.no_retry.is_(False),
        )
        .values(status=Status.IN_QUEUE.value, lease_expires_at=None, worker=None, published_at=None)
        .returning(RequestRow.priority)
    )
    return session.execute(stmt).scalar_one_or_none()


def give_up_expired(session: Session, request_id: uuid.UUID, failure: Failure, *, max_attempts: int) -> bool:
    """Fail a running request whose lease expired once it has used up its attempts, instead of
    queueing it again: a request that kills every worker that runs it must not loop forever."""
    return finish(
        session,
        request_id,
        (
            RequestRow.status == Status.IN_PROGRESS.value,
            RequestRow.lease_expires_at < utcnow(),
            RequestRow.attempts >= max_attempts,
        ),
        **failure_columns(failure),
    )


def fail_no_retry_expired(session: Session, request_id: uuid.UUID, failure: Failure) -> bool:
    """Fail a running X-Fal-No-Retry request whose lease expired: its worker is gone, and it
    must not run again."""
    return finish(
        session,
        request_id,
        (
            RequestRow.status == Status.IN_PROGRESS.value,
            RequestRow.lease_expires_at < utcnow(),
            RequestRow.no_retry.is_(True),
        ),
        **failure_columns(failure),
    )


def fail_no_retry_of_worker(session: Session, worker: str, failure: Failure) -> list[uuid.UUID]:
    """Fail the running X-Fal-No-Retry requests claimed by `worker` (a `host:pid` name), whose
    process is known to be dead, without waiting for their leases; returns their ids.

    Only the dead process's parent calls this: its pid cannot be in use by a live claim then."""
    conditions = (
        RequestRow.status == Status.IN_PROGRESS.value,
        RequestRow.worker == worker,
        RequestRow.no_retry.is_(True),
    )
    held = session.execute(select(RequestRow.id).where(*conditions)).scalars()
    return [rid for rid in list(held) if finish(session, rid, conditions, **failure_columns(failure))]


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
        finish(
            session,
            request_id,
            (RequestRow.status == Status.IN_QUEUE.value, RequestRow.start_deadline < now),
            **failure_columns(failure),
        )
        for request_id in list(late)
    )
