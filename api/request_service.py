"""What the API does with requests, kept apart from HTTP: create and publish, look up, cancel."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.app_ids import AppId
from api.auth import ANONYMOUS, Caller
from core import failures, key_limits
from core.config import get_settings
from core.db import session_scope
from core.models import RequestRow, Status
from core.request_store import CancelOutcome, cancel, create, get, queue_position
from worker.dispatch import publish


@dataclass(frozen=True)
class Snapshot:
    row: RequestRow
    queue_position: int | None


def parse_request_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def submit(
    app: AppId,
    payload: dict[str, Any],
    *,
    priority: int,
    webhook_url: str | None,
    start_deadline: datetime | None,
    caller: Caller = ANONYMOUS,
    retention_s: int | None = None,
) -> Snapshot:
    # The row is committed before anything is published or answered: an accepted request is
    # never lost, at worst published later by the reconciler.
    with session_scope() as session:
        if caller.key_id is not None:
            key_limits.check(session, caller.key_id, get_settings())
        row = create(
            session,
            app_id=app.full,
            payload=payload,
            priority=priority,
            webhook_url=webhook_url,
            start_deadline=start_deadline,
            owner_key_id=caller.key_id,
            retention_s=retention_s,
        )
        position = queue_position(session, row)
    publish(row.id, priority)
    return Snapshot(row, position)


def load(app: AppId, request_id: uuid.UUID, caller: Caller = ANONYMOUS) -> Snapshot | None:
    """The request if it belongs to this app's owner/alias and to the caller, with its queue
    position. Another key's request is reported exactly like an unknown one."""
    with session_scope() as session:
        row = get(session, request_id)
        if row is None or AppId.parse(row.app_id).queue_base != app.queue_base:
            return None
        if not caller.owns(row.owner_key_id):
            return None
        position = queue_position(session, row) if row.status == Status.IN_QUEUE else None
        session.expunge(row)
    return Snapshot(row, position)


def request_cancel(app: AppId, request_id: uuid.UUID, caller: Caller = ANONYMOUS) -> CancelOutcome:
    if load(app, request_id, caller) is None:
        return CancelOutcome.NOT_FOUND
    with session_scope() as session:
        return cancel(session, request_id, failures.cancelled())
