"""The one way into COMPLETED: the columns a completion sets, and what joins its transaction.

Every completing path (a worker's result or failure, a cancel in the queue, the reconciler's
give-up and start timeouts) ends here, so that each one sets the result's expiry, writes the
failure's columns the same way, and adds the metrics' counters and the webhook delivery in the
transaction that completes the row.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import case, func, literal, null, update
from sqlalchemy.orm import Session

from core import metric_rollups, webhook_outbox
from core.clock import utcnow
from core.config import get_settings
from core.failures import Failure
from core.models import RequestRow, Status

_c = RequestRow.__table__.c

# What a completing UPDATE returns: the webhook payload's columns and the metrics' (timestamps,
# outcome, stage timings), so that neither needs another read of the row.
COMPLETION_COLUMNS = tuple(
    {
        column.key: column
        for column in (*webhook_outbox.COMPLETION_COLUMNS, *metric_rollups.COMPLETION_COLUMNS)
    }.values()
)


def failure_columns(failure: Failure) -> dict[str, Any]:
    """The columns that record a failure, which the status and result endpoints replay."""
    return {
        "error": failure.message,
        "error_type": failure.error_type,
        "error_status": failure.status_code,
        "error_body": failure.body,
        "timeout_type": failure.timeout_type,
    }


def result_expiry(finished_at: Any, default_retention_s: Any) -> Any:
    """When a result finished at `finished_at` is due for deletion: its own retention_s, or the
    default in force when it finished."""
    return finished_at + func.make_interval(
        0, 0, 0, 0, 0, 0, func.coalesce(_c.retention_s, default_retention_s)
    )


def kept_logs(logs: Any) -> Any:
    """The logs column a completion leaves: `logs` (an expression of the column), or NULL for a
    request submitted with X-Fal-Store-IO: 0, whose logs are not kept once it ends."""
    return case((_c.store_io, logs), else_=null())


def finish(session: Session, request_id: uuid.UUID, conditions: tuple[Any, ...], **values: Any) -> bool:
    """Complete the row if `conditions` hold, setting `values` besides the completion's own
    columns; returns whether it did. A `logs` value is kept only where the request keeps its
    logs (store_io): the input of one that does not is dropped after the commit, by whoever
    can delete its stored object (the worker, or the reconciler's backstop)."""
    now = utcnow()
    expiry = result_expiry(literal(now), get_settings().result_retention_s)
    logs = kept_logs(values.pop("logs", _c.logs))
    stmt = (
        update(RequestRow)
        .where(RequestRow.id == request_id, *conditions)
        .values(
            status=Status.COMPLETED.value,
            finished_at=now,
            result_expires_at=expiry,
            lease_expires_at=None,
            logs=logs,
            **values,
        )
        .returning(*COMPLETION_COLUMNS)
    )
    return finished(session, session.execute(stmt).one_or_none())


def finished(session: Session, done: Any) -> bool:
    """After a completing UPDATE (`done`: its RETURNING row of COMPLETION_COLUMNS, or None if
    it matched nothing): the metrics' counters and the webhook delivery, if any, join the same
    transaction."""
    if done is None:
        return False
    metric_rollups.record_completion(session, done)
    if done.webhook_url:
        webhook_outbox.enqueue(session, webhook_outbox.completion_of(done))
    return True
