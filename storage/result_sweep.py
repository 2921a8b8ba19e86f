"""The retention sweeps of finished requests (core/retention.py): results first, then rows.

Results: within one transaction a batch of due rows is locked, their output files and stored
inputs are deleted from S3, then the rows are marked expired. If the sweep dies in between, the
transaction rolls back and the rows are still due, so the next round deletes again (deleting a
missing object is harmless) and no file outlives its row's expiry.

Rows: a batch of rows whose result has expired and that ended ROW_RETENTION_S ago is deleted
with its webhook deliveries, in one transaction that also moves the metrics' gauges.

Idempotency keys: a batch of entries past IDEMPOTENCY_TTL_S is deleted, oldest first (their
requests stay; an entry whose request was deleted went with it).

Every batch is claimed with SKIP LOCKED, so any number of API processes sweep together without
repeating each other's work; a round drains the backlog batch by batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import NamedTuple

from core import idempotency, metric_rollups
from core.config import Settings
from core.db import session_scope
from core.requests_table import DueResult, claim_due_results, delete_rows, mark_expired
from storage.layout import INPUT_REF_PREFIX, output_key, output_prefix
from storage.s3 import ObjectStore, get_store

log = logging.getLogger(__name__)


def _keys_of(store: ObjectStore, due: DueResult) -> Iterator[str]:
    if due.output_file:
        yield output_key(due.request_id, due.output_file)
    if due.input_key:
        yield due.input_key
    if due.attempts > 1:
        # An earlier run may have stored an output before its worker was lost: only a listing
        # finds those (rare, so the common row costs no listing).
        yield from store.keys_under(output_prefix(due.request_id))


def expire_results_once(
    settings: Settings, store: ObjectStore | None = None, now: datetime | None = None
) -> int:
    """One batch of results; returns how many expired."""
    store = store or get_store()
    with session_scope() as session:
        due = claim_due_results(
            session, settings.sweep_batch_size, input_ref_prefix=INPUT_REF_PREFIX, now=now
        )
        store.delete_keys(key for item in due for key in _keys_of(store, item))
        return mark_expired(session, [item.request_id for item in due], now=now)


def delete_rows_once(settings: Settings, now: datetime | None = None) -> int:
    """One batch of rows; returns how many were deleted."""
    with session_scope() as session:
        deleted = delete_rows(session, settings.row_retention_s, settings.sweep_batch_size, now=now)
        if deleted.requests:
            metric_rollups.record_deleted(
                session, requests=deleted.requests, deliveries_by_state=deleted.deliveries_by_state
            )
        return deleted.requests


def delete_idempotency_keys_once(settings: Settings, now: datetime | None = None) -> int:
    """One batch of expired idempotency entries; returns how many were deleted."""
    with session_scope() as session:
        return idempotency.delete_expired(session, settings.sweep_batch_size, now=now)


def drain(batch: Callable[[], int], settings: Settings, stop: threading.Event | None = None) -> int:
    """Run `batch()` until it returns less than a full batch (the backlog is cleared)."""
    total = 0
    while stop is None or not stop.is_set():
        done = batch()
        total += done
        if done < settings.sweep_batch_size:
            break
    return total


class SweepCounts(NamedTuple):
    expired: int
    deleted: int
    idempotency_keys: int


def sweep_once(settings: Settings, stop: threading.Event | None = None) -> SweepCounts:
    """One round: every due result, every due row, then every expired idempotency entry."""
    store = get_store()
    expired = drain(lambda: expire_results_once(settings, store), settings, stop)
    deleted = drain(lambda: delete_rows_once(settings), settings, stop)
    keys = drain(lambda: delete_idempotency_keys_once(settings), settings, stop)
    return SweepCounts(expired, deleted, keys)


def run_forever(settings: Settings, stop: threading.Event) -> None:
    while not stop.wait(settings.retention_sweep_interval_s):
        try:
            counts = sweep_once(settings, stop)
        except Exception:
            log.exception("retention sweep failed; retrying next round")
            continue
        if any(counts):
            log.info(
                "retention sweep: %d results expired, %d rows deleted, %d idempotency keys deleted",
                *counts,
            )
