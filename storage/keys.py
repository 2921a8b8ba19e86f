"""Object key layout in the bucket: everything about one request lives under its id."""

from __future__ import annotations

import uuid


def output_key(request_id: uuid.UUID, file_name: str) -> str:
    return f"outputs/{request_id}/{file_name}"


def upload_key(upload_id: uuid.UUID, file_name: str) -> str:
    return f"uploads/{upload_id}/{file_name}"
