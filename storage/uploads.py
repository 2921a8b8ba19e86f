"""Uploaded input files in the bucket: names, limits, single and multipart writes.

Every upload lives at `uploads/<shard>/<uuid>/<file name>` (storage/layout.py); the random uuid
makes keys unguessable and lets the sweep (storage/upload_sweep.py) find uploads by prefix.
"""

from __future__ import annotations

import fnmatch
import mimetypes
import re
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core.config import Settings
from storage.layout import upload_key
from storage.s3 import ObjectStore

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_PART_NUMBER = 10_000  # S3's own limit
_NAME_MAX = 120
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadRejected(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class UploadPolicy:
    max_bytes: int
    content_types: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadPolicy:
        return cls(settings.upload_max_bytes, tuple(settings.upload_content_type_list))

    def check_content_type(self, content_type: str) -> None:
        if not any(fnmatch.fnmatchcase(content_type, pattern) for pattern in self.content_types):
            raise UploadRejected(415, f"content type {content_type!r} is not accepted for uploads")

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise UploadRejected(413, f"the file is too large (the limit is {self.max_bytes} bytes)")


def clean_content_type(raw: str | None) -> str:
    """The media type without parameters (`image/png; charset=x` → `image/png`)."""
    value = (raw or "").split(";", 1)[0].strip().lower()
    return value if "/" in value else DEFAULT_CONTENT_TYPE


def safe_file_name(name: str | None, content_type: str) -> str:
    # Only the last path component, in a conservative alphabet: keys must stay one segment deep
    # (the service file URLs and the sweep rely on storage.layout.upload_key).
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME.sub("_", base).strip("._")[:_NAME_MAX]
    if base:
        return base
    extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"upload{extension}"


def new_upload_key(file_name: str) -> str:
    return upload_key(uuid.uuid4(), file_name)


class Uploads:
    """S3 operations on uploads, through the service's own ObjectStore client."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._s3: Any = store.client
        self.bucket = store.bucket

    def file_url(self, key: str) -> str:
        # The same kind of URL as the outputs (presigned, or under S3_PUBLIC_BASE_URL), which the
        # worker recognises and reads through the S3 API.
        return self._store.url_for(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._store.put(key, data, content_type)

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def start_multipart(self, key: str, content_type: str) -> str:
        self._store.ensure_bucket()
        created = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        return str(created["UploadId"])

    def put_part(self, key: str, s3_upload_id: str, part_number: int, data: bytes) -> str:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise UploadRejected(400, f"part numbers run from 1 to {MAX_PART_NUMBER}")
        try:
            part = self._s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=s3_upload_id, PartNumber=part_number, Body=data
            )
        except ClientError as exc:
            raise _rejected(exc) from exc
        return str(part["ETag"])

    def complete(
        self, key: str, s3_upload_id: str, parts: list[tuple[int, str]], policy: UploadPolicy
    ) -> None:
        ordered = sorted(parts)
        try:
            self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=s3_upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in ordered]},
            )
            size = int(self._s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            raise _rejected(exc) from exc
        # Each part was checked alone; the whole file can only be checked once it exists.
        if size > policy.max_bytes:
            self._s3.delete_object(Bucket=self.bucket, Key=key)
            policy.check_size(size)


def _rejected(exc: ClientError) -> UploadRejected:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in {"NoSuchUpload", "NoSuchKey", "404"}:
        return UploadRejected(404, "unknown or finished multipart upload")
    if code in {"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "InvalidArgument", "MalformedXML"}:
        return UploadRejected(400, f"the storage refused the parts: {code}")
    return UploadRejected(502, f"the storage failed: {code or type(exc).__name__}")
