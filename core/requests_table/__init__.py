"""Every read and write of the requests table (its schema: core/models.py), in one package.

One module per concern, because the table is used in ways that want different tools:
- api_statements: the API's insert, status read and queue position, one asyncpg statement each
  (the API's hot path; asyncpg for throughput). The insert is the only way a row is made, in
  production and in the tests.
- position_board: positions in a long queue, from one periodic ordered read per API process.
- key_limits: per-key limits, counted in the submitting transaction (asyncpg).
- queue_length: ?fal_max_queue_length, an exact count that stops at the limit (asyncpg).
- transitions: publish mark, claims, lease renewals, the worker's completions, cancel
  (SQLAlchemy Core statements, prebuilt where a worker runs them per request).
- completion: the one way into COMPLETED, and the one way a failure becomes columns.
- stale: what the reconciler finds and repairs (lost publishes, expired leases, deadlines).
- retention: the result and row sweeps' batches.
- gauges: the waiting and running counts that /metrics reports.

The names callers use are re-exported here; key_limits, queue_length, position_board and gauges are imported
as modules (`from core.requests_table import key_limits`).
"""

from core.requests_table.api_statements import RequestView, fetch, insert, settle_position
from core.requests_table.completion import failure_columns
from core.requests_table.key_limits import LimitExceeded
from core.requests_table.retention import (
    DeletedRows,
    DueResult,
    UnforgottenInput,
    claim_due_results,
    claim_unforgotten_inputs,
    delete_rows,
    forget_inputs,
    mark_expired,
)
from core.requests_table.stale import (
    Stale,
    expire_unstarted,
    fail_no_retry_expired,
    fail_no_retry_of_worker,
    find_stale,
    give_up_expired,
    requeue_expired,
)
from core.requests_table.transitions import (
    CancelOutcome,
    cancel,
    claim,
    claim_waiting,
    complete_failed,
    complete_ok,
    get,
    log_entry,
    mark_published,
    renew_lease,
)

__all__ = [
    "CancelOutcome",
    "DeletedRows",
    "DueResult",
    "LimitExceeded",
    "RequestView",
    "Stale",
    "UnforgottenInput",
    "cancel",
    "claim",
    "claim_due_results",
    "claim_unforgotten_inputs",
    "claim_waiting",
    "complete_failed",
    "complete_ok",
    "delete_rows",
    "expire_unstarted",
    "fail_no_retry_expired",
    "fail_no_retry_of_worker",
    "failure_columns",
    "fetch",
    "forget_inputs",
    "find_stale",
    "get",
    "give_up_expired",
    "insert",
    "log_entry",
    "mark_expired",
    "mark_published",
    "renew_lease",
    "requeue_expired",
    "settle_position",
]
