"""Deletes results older than their retention: the output files in S3, then the result in the row.

Files first: if the sweep dies between the two, the row is still due and the next round deletes
again (deleting a missing object is harmless), so no file outlives its row's expiry. Several API
processes may sweep at once for the same reason.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from core.config import Settings
from core.db import session_scope
from core.retention import due_for_expiry, mark_expired
from storage.s3 import ObjectStore, get_store

log = logging.getLogger(__name__)


def delete_outputs(store: ObjectStore, request_id: uuid.UUID) -> int:
    s3: Any = store.client
    prefix = f"outputs/{request_id}/"
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    if keys:
        s3.delete_objects(Bucket=store.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    return len(keys)


def sweep_once(settings: Settings, store: ObjectStore | None = None) -> int:
    """One round; returns how many results expired."""
    store = store or get_store()
    with session_scope() as session:
        due = due_for_expiry(session, settings.result_retention_s)
    expired = 0
    for request_id in due:
        delete_outputs(store, request_id)
        with session_scope() as session:
            expired += mark_expired(session, request_id)
    return expired


def run_forever(settings: Settings, stop: threading.Event) -> None:
    while not stop.wait(settings.retention_sweep_interval_s):
        try:
            expired = sweep_once(settings)
        except Exception:
            log.exception("result sweep failed; retrying next round")
            continue
        if expired:
            log.info("result sweep: %d results expired", expired)
