"""What the API does with requests, kept apart from HTTP: create and publish, look up, cancel."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.app_ids import AppId
from core import failures
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
) -> Snapshot:
    # The row is committed before anything is published or answered: an accepted request is
    # never lost, at worst published later by the reconciler.
    with session_scope() as session:
        row = create(
            session,
            app_id=app.full,
            payload=payload,
            priority=priority,
            webhook_url=webhook_url,
            start_deadline=start_deadline,
        )
        position = queue_position(session, row)
    publish(row.id, priority)
    return Snapshot(row, position)


def load(app: AppId, request_id: uuid.UUID) -> Snapshot | None:
    """The request if it belongs to this app's owner/alias, with its queue position."""
    with session_scope() as session:
        row = get(session, request_id)
        if row is None or AppId.parse(row.app_id).queue_base != app.queue_base:
            return None
        position = queue_position(session, row) if row.status == Status.IN_QUEUE else None
        session.expunge(row)
    return Snapshot(row, position)


def request_cancel(app: AppId, request_id: uuid.UUID) -> CancelOutcome:
    if load(app, request_id) is None:
        return CancelOutcome.NOT_FOUND
    with session_scope() as session:
        return cancel(session, request_id, failures.cancelled())
