"""Deletes uploads older than UPLOAD_RETENTION_S, and abandoned multipart uploads.

A sweep rather than an S3 lifecycle rule: the local S3 server (s3rver) and some S3-compatible
servers ignore lifecycle configuration. One API process sweeps at a time (a PostgreSQL advisory
lock: the others skip the round rather than list the same objects again), page by page, each
page's expired objects in one DeleteObjects call.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from core.config import Settings
from core.db import session_scope
from storage.layout import UPLOADS
from storage.s3 import ObjectStore, get_store

log = logging.getLogger(__name__)
# hashtext() of this names the advisory lock that makes one process the sweeper of a round.
_LOCK_NAME = "portrait-queue:upload-sweep"


@dataclass(frozen=True)
class SweepResult:
    deleted: int = 0
    aborted: int = 0


def sweep_once(store: ObjectStore, retention_s: int, now: datetime | None = None) -> SweepResult:
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=retention_s)
    s3: Any = store.client
    deleted = 0
    # A page is at most 1,000 keys (DELETE_BATCH): memory stays flat whatever the backlog. Each
    # page is deleted while the next one is listed: the two cost about the same.
    with ThreadPoolExecutor(max_workers=1) as deleter:
        pending: Future[int] | None = None
        for page in store.list_pages(UPLOADS):
            expired = [obj["Key"] for obj in page if obj["LastModified"] < cutoff]
            if pending is not None:
                deleted += pending.result()
            pending = deleter.submit(store.delete_keys, expired)
        if pending is not None:
            deleted += pending.result()
    return SweepResult(deleted=deleted, aborted=_abort_stale_multipart(s3, store.bucket, cutoff))


def sweep_if_leader(store: ObjectStore, retention_s: int) -> SweepResult | None:
    """A round by the one process that holds the sweep's lock; None where another holds it."""
    with session_scope() as session:
        # Transaction-scoped: released by the commit, or by PostgreSQL if this process dies.
        leader = session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"), {"name": _LOCK_NAME}
        ).scalar_one()
        if not leader:
            return None
        return sweep_once(store, retention_s)


def _abort_stale_multipart(s3: Any, bucket: str, cutoff: datetime) -> int:
    # Parts of an upload that never completed cost storage but are invisible to list_objects.
    try:
        listing = s3.list_multipart_uploads(Bucket=bucket, Prefix=UPLOADS)
    except ClientError:
        return 0  # not every S3-compatible server lists multipart uploads (s3rver does not)
    aborted = 0
    for upload in listing.get("Uploads", []):
        if upload["Initiated"] < cutoff:
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted += 1
    return aborted


def run_forever(settings: Settings, stop: threading.Event) -> None:
    while not stop.wait(settings.upload_sweep_interval_s):
        try:
            result = sweep_if_leader(get_store(), settings.upload_retention_s)
        except (BotoCoreError, ClientError, SQLAlchemyError, RuntimeError):
            log.exception("upload sweep failed; retrying next round")
            continue
        if result is not None and (result.deleted or result.aborted):
            log.info(
                "upload sweep: deleted %d files, aborted %d multipart uploads", result.deleted, result.aborted
            )
