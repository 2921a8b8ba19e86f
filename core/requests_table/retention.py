"""The two retention steps of a finished request, as batches any number of processes may run.

1. Result expiry: RESULT_RETENTION_S (or the request's own lifecycle preference) after it ended,
   its output files and stored input are deleted and the row keeps only status and error
   (`expired_at` set: the result endpoint answers 410).
2. Row deletion: ROW_RETENTION_S after it ended, and once its result has expired, the row goes
   with its webhook deliveries and their attempts (the result endpoint answers 404).

Besides these, a request submitted with X-Fal-Store-IO: 0 loses its input as soon as it ended
(its logs go in the completing statement): `claim_unforgotten_inputs` and `forget_inputs` are
the backstop for those whose ending process could not delete the input itself.

Each batch is claimed with FOR UPDATE SKIP LOCKED through a partial index of the rows it is
about, so concurrent sweepers take disjoint batches, a batch costs the same whatever the size of
the history, and nothing a submit, a worker or a poll touches is ever locked (only finished rows
are).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.clock import utcnow

# The object key of an input stored at submit, from its `image_url` reference (else NULL).
_INPUT_KEY = """CASE WHEN starts_with(input ->> 'image_url', :input_ref_prefix)
    THEN substr(input ->> 'image_url', length(:input_ref_prefix) + 1) END AS input_key"""

_DUE_RESULTS = text(
    f"""
    SELECT id, attempts, output -> 'image' ->> 'file_name' AS file_name, {_INPUT_KEY}
    FROM requests
    WHERE status = 'COMPLETED' AND expired_at IS NULL AND result_expires_at < :now
    ORDER BY result_expires_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

_MARK_EXPIRED = text(
    "UPDATE requests SET expired_at = :now, output = NULL"
    " WHERE id = ANY(:ids) AND status = 'COMPLETED' AND expired_at IS NULL"
)

# A pending delivery keeps its request: a redelivery the caller asked for still has its row.
_DUE_ROWS = text(
    """
    SELECT id FROM requests r
    WHERE status = 'COMPLETED' AND expired_at IS NOT NULL AND finished_at < :cutoff
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                      WHERE d.request_id = r.id AND d.state = 'pending')
    ORDER BY finished_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

# Deliveries are deleted explicitly (their attempts follow by cascade) so that the batch knows
# how many of each state left, for the metrics' gauges.
_DELETE_DELIVERIES = text("DELETE FROM webhook_deliveries WHERE request_id = ANY(:ids) RETURNING state")
_DELETE_ROWS = text("DELETE FROM requests WHERE id = ANY(:ids) AND status = 'COMPLETED'")


# Ended X-Fal-Store-IO: 0 rows whose input is still there; the partial index
# requests_input_unforgotten holds only these, for the moments between a completion and the
# input's deletion.
_UNFORGOTTEN = text(
    f"""
    SELECT id, {_INPUT_KEY}
    FROM requests
    WHERE status = 'COMPLETED' AND NOT store_io AND input IS NOT NULL
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

_FORGET = text(
    "UPDATE requests SET input = NULL"
    " WHERE id = ANY(:ids) AND status = 'COMPLETED' AND NOT store_io AND input IS NOT NULL"
)


@dataclass(frozen=True)
class UnforgottenInput:
    request_id: uuid.UUID
    input_key: str | None  # the input's object, when it was written to the bucket at submit


@dataclass(frozen=True)
class DueResult:
    request_id: uuid.UUID
    attempts: int
    output_file: str | None  # the stored output's file name (None for a failure)
    input_key: str | None  # the input's object, when it was written to the bucket at submit


@dataclass(frozen=True)
class DeletedRows:
    requests: int
    deliveries_by_state: dict[str, int]


def claim_due_results(
    session: Session, limit: int, *, input_ref_prefix: str, now: datetime | None = None
) -> list[DueResult]:
    """Lock up to `limit` results past their expiry (until this transaction ends). A row whose
    `image_url` starts with `input_ref_prefix` has its input stored in the bucket, under the
    key that follows the prefix."""
    params = {"now": now or utcnow(), "limit": limit, "input_ref_prefix": input_ref_prefix}
    rows = session.execute(_DUE_RESULTS, params).all()
    return [DueResult(r.id, r.attempts, r.file_name, r.input_key) for r in rows]


def claim_unforgotten_inputs(
    session: Session, limit: int, *, input_ref_prefix: str
) -> list[UnforgottenInput]:
    """Lock up to `limit` ended X-Fal-Store-IO: 0 rows that still hold their input (until this
    transaction ends); a stored input's key follows `input_ref_prefix` in its `image_url`."""
    params = {"limit": limit, "input_ref_prefix": input_ref_prefix}
    return [UnforgottenInput(r.id, r.input_key) for r in session.execute(_UNFORGOTTEN, params).all()]


def forget_inputs(session: Session, request_ids: list[uuid.UUID]) -> int:
    """Clear the input of ended X-Fal-Store-IO: 0 rows (after their stored objects were deleted)."""
    if not request_ids:
        return 0
    result: Any = session.execute(_FORGET, {"ids": request_ids})
    return int(result.rowcount)


def mark_expired(session: Session, request_ids: list[uuid.UUID], now: datetime | None = None) -> int:
    """Drop the stored results; the rows stay so that the result endpoint can answer 410."""
    if not request_ids:
        return 0
    result: Any = session.execute(_MARK_EXPIRED, {"ids": request_ids, "now": now or utcnow()})
    return int(result.rowcount)


def delete_rows(
    session: Session, row_retention_s: int, limit: int, now: datetime | None = None
) -> DeletedRows:
    """Delete up to `limit` rows that ended more than `row_retention_s` ago and whose result has
    expired, with their webhook deliveries and attempts, in the caller's transaction."""
    cutoff = (now or utcnow()) - timedelta(seconds=row_retention_s)
    ids = list(session.execute(_DUE_ROWS, {"cutoff": cutoff, "limit": limit}).scalars())
    if not ids:
        return DeletedRows(0, {})
    states = Counter(str(state) for state in session.execute(_DELETE_DELIVERIES, {"ids": ids}).scalars())
    result: Any = session.execute(_DELETE_ROWS, {"ids": ids})
    return DeletedRows(int(result.rowcount), dict(states))
