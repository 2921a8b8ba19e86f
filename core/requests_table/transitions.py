"""A request's life after the API inserted it, over SQLAlchemy: the whole-row read, publish
mark, claims, lease renewals, the worker's completions, cancel, and the shape of the log lines
they append.

Every transition is one conditional UPDATE, so concurrent API processes, workers and reconcilers
never step on each other; completions go through core.requests_table.completion.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, Update, and_, bindparam, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.config import get_settings
from core.failures import Failure
from core.models import RequestRow, Status
from core.requests_table.completion import (
    COMPLETION_COLUMNS,
    failure_columns,
    finish,
    finished,
    kept_logs,
    result_expiry,
)

# The worker's statements (claim, renewal, completion) run once or more per request on every
# worker, so they are built once, with bound parameters, and run on the table rather than through
# the ORM: building a statement and the ORM's bookkeeping cost more than the round trip itself.
_requests = RequestRow.__table__
_c = _requests.c


def log_entry(message: str, level: str = "INFO", at: datetime | None = None) -> dict[str, Any]:
    """One line of the logs column, in the shape fal's clients parse."""
    return {
        "message": message,
        "level": level,
        "source": "USER",
        "timestamp": (at or utcnow()).isoformat(),
    }


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
    `attempts` counts real runs even when a redelivered message races the reconciler; nor is one
    submitted with X-Fal-No-Retry once it has been claimed (`fail_no_retry_expired` fails it).
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
            _runs_left(),
            or_(
                _c.status == Status.IN_QUEUE.value,
                and_(_c.status == Status.IN_PROGRESS.value, _c.lease_expires_at < bindparam("claimed_at")),
            ),
        )
        .values(**_claimed())
        .returning(*_c)
    )


def _runs_left() -> Any:
    """A request submitted with X-Fal-No-Retry runs at most once: claimed once, never again."""
    return or_(~_c.no_retry, _c.attempts == 0)


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
        .where(_c.status == Status.IN_QUEUE.value, _c.attempts < max_attempts, _runs_left())
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
    return finished(session, session.execute(_complete_ok_statement(), params).one_or_none())


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
            result_expires_at=result_expiry(bindparam("finished_at"), bindparam("default_retention_s")),
            lease_expires_at=None,
            output=bindparam("new_output"),
            metrics=bindparam("new_metrics"),
            logs=kept_logs(_appended_param()),
        )
        .returning(*(_c[column.key] for column in COMPLETION_COLUMNS))
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
    return finish(
        session,
        request_id,
        conditions,
        **failure_columns(failure),
        metrics=metrics,
        **_with_logs(logs),
    )


def _with_logs(logs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"logs": _appended(logs)} if logs else {}


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # was waiting: it will never run
    REQUESTED = "requested"  # is running: the worker stops at its next check
    ALREADY_COMPLETED = "already_completed"
    NOT_FOUND = "not_found"


def cancel(session: Session, request_id: uuid.UUID, failure: Failure) -> CancelOutcome:
    waiting = finish(
        session,
        request_id,
        (RequestRow.status == Status.IN_QUEUE.value,),
        cancel_requested=True,
        **failure_columns(failure),
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
