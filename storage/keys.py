"""Object key layout in the bucket: everything about one request lives under its id."""

from __future__ import annotations

import uuid

# A request's input written to the bucket at submit (a large data URI) is named in its row by
# this prefix and its key, so that the row stays small and the result sweep knows what to delete.
INPUT_REF_PREFIX = "stored-input:"


def output_key(request_id: uuid.UUID, file_name: str) -> str:
    return f"outputs/{request_id}/{file_name}"


def output_prefix(request_id: uuid.UUID) -> str:
    return f"outputs/{request_id}/"


def input_key(request_id: uuid.UUID) -> str:
    return f"inputs/{request_id}/image"


def input_ref(request_id: uuid.UUID) -> str:
    return INPUT_REF_PREFIX + input_key(request_id)


def upload_key(upload_id: uuid.UUID, file_name: str) -> str:
    return f"uploads/{upload_id}/{file_name}"
