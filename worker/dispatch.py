"""Publishing "run request X" messages. Always called after the row is committed."""

from __future__ import annotations

import logging
import uuid

from core.config import get_settings
from core.db import session_scope
from core.log_context import bound_request_id
from core.request_store import mark_published
from worker.celery_app import app
from worker.queues import EDIT_TASK, queue_for

log = logging.getLogger(__name__)


def publish(request_id: uuid.UUID, priority: int) -> bool:
    """Send the message; on failure the row stays unpublished and the reconciler retries."""
    # Bound here so that the message's headers and any line logged below carry the id.
    with bound_request_id(request_id):
        return _publish(request_id, priority)


def _publish(request_id: uuid.UUID, priority: int) -> bool:
    try:
        app.send_task(EDIT_TASK, args=[str(request_id)], queue=queue_for(get_settings(), priority))
    except Exception:
        log.exception("could not publish request %s; the reconciler will retry", request_id)
        return False
    try:
        with session_scope() as session:
            mark_published(session, request_id)
    except Exception:
        # Harmless: an unmarked row is merely published once more later.
        log.exception("could not mark request %s as published", request_id)
    return True
