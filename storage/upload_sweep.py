"""Deletes uploads older than UPLOAD_RETENTION_S, and abandoned multipart uploads.

A sweep rather than an S3 lifecycle rule: the local S3 server (s3rver) and some S3-compatible
servers ignore lifecycle configuration. Several API processes may sweep at once; deleting an
object twice is harmless.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.config import Settings
from storage.s3 import ObjectStore, get_store
from storage.uploads import UPLOAD_PREFIX

log = logging.getLogger(__name__)
_DELETE_BATCH = 1000  # DeleteObjects' limit


@dataclass(frozen=True)
class SweepResult:
    deleted: int = 0
    aborted: int = 0


def sweep_once(store: ObjectStore, retention_s: int, now: datetime | None = None) -> SweepResult:
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=retention_s)
    s3: Any = store.client
    expired: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=UPLOAD_PREFIX):
        expired.extend(obj["Key"] for obj in page.get("Contents", []) if obj["LastModified"] < cutoff)
    for start in range(0, len(expired), _DELETE_BATCH):
        batch = expired[start : start + _DELETE_BATCH]
        s3.delete_objects(
            Bucket=store.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
        )
    return SweepResult(deleted=len(expired), aborted=_abort_stale_multipart(s3, store.bucket, cutoff))


def _abort_stale_multipart(s3: Any, bucket: str, cutoff: datetime) -> int:
    # Parts of an upload that never completed cost storage but are invisible to list_objects.
    try:
        listing = s3.list_multipart_uploads(Bucket=bucket, Prefix=UPLOAD_PREFIX)
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
            result = sweep_once(get_store(), settings.upload_retention_s)
        except (BotoCoreError, ClientError):
            log.exception("upload sweep failed; retrying next round")
            continue
        if result.deleted or result.aborted:
            log.info(
                "upload sweep: deleted %d files, aborted %d multipart uploads", result.deleted, result.aborted
            )
