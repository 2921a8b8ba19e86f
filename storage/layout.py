"""The bucket's key layout: every object key the service writes, under one of three roots."""

from __future__ import annotations

import secrets
import string
import uuid

# A request's input written to the bucket at submit (a large data URI) is named in its row by
# this prefix and its key, so that the row stays small and the result sweep knows what to delete.
INPUT_REF_PREFIX = "stored-input:"
_NAME_ALPHABET = string.ascii_letters + string.digits
# The three roots of the bucket: results, inputs written at submit, and uploads.
OUTPUTS = "outputs/"
INPUTS = "inputs/"
UPLOADS = "uploads/"


def output_key(request_id: uuid.UUID, file_name: str) -> str:
    return f"{OUTPUTS}{request_id}/{file_name}"


def output_prefix(request_id: uuid.UUID) -> str:
    return f"{OUTPUTS}{request_id}/"


def random_name(suffix: str = "") -> str:
    """A file name nobody can guess: a request id alone must not lead to its files when the
    bucket is public (S3_PUBLIC_BASE_URL)."""
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(12)) + suffix


def input_key(request_id: uuid.UUID, file_name: str) -> str:
    return f"{INPUTS}{request_id}/{file_name}"


def input_ref(key: str) -> str:
    return INPUT_REF_PREFIX + key


def key_of_ref(ref: str) -> str | None:
    """The object key a stored-input reference names, or None if `ref` is no such reference."""
    return ref[len(INPUT_REF_PREFIX) :] if ref.startswith(INPUT_REF_PREFIX) else None


def upload_key(upload_id: uuid.UUID, file_name: str) -> str:
    # Under a two-character shard of the id: a file-backed S3 server (s3rver, `make run`'s) scans
    # an object's parent folder on every delete, and one folder of every upload made the upload
    # sweep slow down with the number of uploads kept (384 objects/s at 5,000; 1,390 sharded).
    return f"{UPLOADS}{str(upload_id)[:2]}/{upload_id}/{file_name}"
