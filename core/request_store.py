"""Every read and state change of a request row. All transitions are single conditional UPDATEs,
so concurrent API processes, workers and reconcilers never step on each other."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, Update, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from core import metric_rollups, webhook_outbox
from core.config import get_settings
from core.failures import Failure
from core.models import RequestRow, Status

# The worker's statements (claim, renewal, completion) run once or more per request on every
# worker, so they are built once, with bound parameters, and run on the table rather than through
# the ORM: building a statement and the ORM's bookkeeping cost more than the round trip itself.
_requests = RequestRow.__table__
_c = _requests.c


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


def mark_published(session: Session, request_ids: list[uuid.UUID]) -> None:
    session.execute(
        update(RequestRow)
        .where(RequestRow.id.in_(request_ids), RequestRow.status == Status.IN_QUEUE.value)
        .values(published_at=utcnow())
    )


def claim(
    session: Session, request_id: uuid.UUID, *, worker: str, lease_s: int, max_attempts: int | None = None
) -> Row[Any] | None:
    """Take the request for this worker, or None if someone else has it or it is finished; the
    claimed row's columns are returned (attribute access, like a RequestRow).

    A running request whose lease ran out (its worker died) can be claimed again; `attempts` is
    the fencing token that keeps the old worker from completing it afterwards. A request that
    has used `max_attempts` runs is never claimed again (`give_up_expired` fails it), so
    `attempts` counts real runs even when a redelivered message races the reconciler.
    """
    params = {"request_id": request_id, "max_attempts": max_attempts, **_claim_params(worker, lease_s)}
    return session.execute(_claim_statement(max_attempts is not None), params).one_or_none()


@lru_cache(maxsize=2)
def _claim_statement(limited: bool) -> Update:
    limit = (_c.attempts < bindparam("max_attempts"),) if limited else ()
    return (
        update(_requests)
        .where(
            _c.id == bindparam("request_id"),
            *limit,
            or_(
                _c.status == Status.IN_QUEUE.value,
                and_(_c.status == Status.IN_PROGRESS.value, _c.lease_expires_at < bindparam("claimed_at")),
            ),
        )
        .values(**_claimed())
        .returning(*_c)
    )


def _claimed() -> dict[str, Any]:
    """The columns a claim sets: running, by this worker, one more attempt, a fresh lease (the
    values bound by `_claim_params`)."""
    return {
        "status": Status.IN_PROGRESS.value,
        "started_at": bindparam("claimed_at"),
        "worker": bindparam("claimed_by"),
        "attempts": _c.attempts + 1,
        "lease_expires_at": bindparam("lease_until"),
    }


def _claim_params(worker: str, lease_s: int) -> dict[str, Any]:
    now = utcnow()
    return {"claimed_at": now, "claimed_by": worker, "lease_until": now + timedelta(seconds=lease_s)}


def claim_waiting(
    session: Session, *, worker: str, lease_s: int, max_attempts: int, limit: int
) -> list[Row[Any]]:
    """Claim up to `limit` waiting requests, highest priority then oldest first, skipping rows
    that other workers are claiming at this moment (their messages then find nothing to run)."""
    waiting = (
        select(_c.id)
        .where(_c.status == Status.IN_QUEUE.value, _c.attempts < max_attempts)
        .order_by(_c.priority, _c.queued_at, _c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(_requests)
        .where(_c.id.in_(waiting.scalar_subquery()), _c.status == Status.IN_QUEUE.value)
        .values(**_claimed())
        .returning(*_c)
    )
    return list(session.execute(stmt, _claim_params(worker, lease_s)).all())


def renew_lease(
    session: Session,
    request_id: uuid.UUID,
    attempt: int,
    *,
    lease_s: int,
    logs: list[dict[str, Any]] | None = None,
) -> bool | None:
    """Extend the lease, appending `logs` if any (a worker's buffered lines ride along with its
    renewals); returns whether cancellation was requested, None if the claim was lost (and then
    nothing is written)."""
    params: dict[str, Any] = {
        "request_id": request_id,
        "attempt": attempt,
        "lease_until": utcnow() + timedelta(seconds=lease_s),
        "new_logs": logs or [],
    }
    return session.execute(_renew_statement(bool(logs)), params).scalar_one_or_none()


@lru_cache(maxsize=2)
def _renew_statement(with_logs: bool) -> Update:
    values: dict[str, Any] = {"lease_expires_at": bindparam("lease_until")}
    if with_logs:
        values["logs"] = _appended_param()
    return (
        update(_requests)
        .where(
            _c.id == bindparam("request_id"),
            _c.status == Status.IN_PROGRESS.value,
            _c.attempts == bindparam("attempt"),
        )
        .values(**values)
        .returning(_c.cancel_requested)
    )


def _appended_param() -> Any:
    """The logs column with the bound list `new_logs` appended."""
    return _c.logs.op("||", return_type=JSONB)(bindparam("new_logs", type_=JSONB))


def _appended(entries: list[dict[str, Any]]) -> Any:
    # JSONB concatenation appends in place, so concurrent readers always see a prefix.
    return RequestRow.logs.op("||", return_type=JSONB)(literal(entries, JSONB))


def complete_ok(
    session: Session,
    request_id: uuid.UUID,
    attempt: int,
    *,
    output: dict[str, Any],
    metrics: dict[str, Any],
    logs: list[dict[str, Any]] | None = None,
) -> bool:
    """Complete the request with its result, if this claim (`attempt`) still holds it; `logs`,
    the worker's last buffered lines, are appended by the same statement."""
    params = {
        "request_id": request_id,
        "attempt": attempt,
        "finished_at": utcnow(),
        "new_output": output,
        "new_metrics": metrics,
        "new_logs": logs or [],
        "default_retention_s": get_settings().result_retention_s,
    }
    return _finished(session, session.execute(_complete_ok_statement(), params).one_or_none())


@lru_cache(maxsize=1)
def _complete_ok_statement() -> Update:
    return (
        update(_requests)
        .where(
            _c.id == bindparam("request_id"),
            _c.attempts == bindparam("attempt"),
            _c.status == Status.IN_PROGRESS.value,
        )
        .values(
            status=Status.COMPLETED.value,
            finished_at=bindparam("finished_at"),
            result_expires_at=_result_expiry(bindparam("finished_at"), bindparam("default_retention_s")),
            lease_expires_at=None,
            output=bindparam("new_output"),
            metrics=bindparam("new_metrics"),
            logs=_appended_param(),
        )
        .returning(*(_c[column.key] for column in _COMPLETION_COLUMNS))
    )


def complete_failed(
    session: Session,
    request_id: uuid.UUID,
    failure: Failure,
    *,
    attempt: int | None = None,
    metrics: dict[str, Any] | None = None,
    logs: list[dict[str, Any]] | None = None,
) -> bool:
    """Fail the request; with `attempt`, only if that claim still holds it. `logs` are appended
    by the same statement."""
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
        **_with_logs(logs),
    )


def _with_logs(logs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"logs": _appended(logs)} if logs else {}


def _result_expiry(finished_at: Any, default_retention_s: Any) -> Any:
    """When a result finished at `finished_at` is due for deletion: its own retention_s, or the
    default in force when it finished."""
    return finished_at + func.make_interval(
        0, 0, 0, 0, 0, 0, func.coalesce(_c.retention_s, default_retention_s)
    )


def _finish(session: Session, request_id: uuid.UUID, conditions: tuple[Any, ...], **values: Any) -> bool:
    """The one way into COMPLETED: the webhook delivery, if any, joins this same transaction."""
    now = utcnow()
    expiry = _result_expiry(literal(now), get_settings().result_retention_s)
    stmt = (
        update(RequestRow)
        .where(RequestRow.id == request_id, *conditions)
        .values(
            status=Status.COMPLETED.value,
            finished_at=now,
            result_expires_at=expiry,
            lease_expires_at=None,
            **values,
        )
        .returning(*_COMPLETION_COLUMNS)
    )
    return _finished(session, session.execute(stmt).one_or_none())


# What a completing UPDATE returns: the webhook payload's columns and the metrics' (timestamps,
# outcome, stage timings), so that neither needs another read of the row.
_COMPLETION_COLUMNS = tuple(
    {
        column.key: column
        for column in (*webhook_outbox.COMPLETION_COLUMNS, *metric_rollups.COMPLETION_COLUMNS)
    }.values()
)


def _finished(session: Session, done: Any) -> bool:
    """After a completing UPDATE (`done`: its RETURNING row of _COMPLETION_COLUMNS, or None if
    it matched nothing): the metrics' counters and the webhook delivery, if any, join the same
    transaction."""
    if done is None:
        return False
    metric_rollups.record_completion(session, done)
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
