"""Publishing "attempt delivery X" messages to the dispatchers' own queue. Always called after
the delivery row is committed; what a crash or a broker loss leaves behind, the reconciler's
sweep (`core.webhook_outbox.find_due`) publishes again."""

from __future__ import annotations

import logging
import uuid

from core.config import get_settings
from core.db import session_scope
from core.webhook_outbox import set_published
from worker.celery_app import app
from worker.queues import WEBHOOK_TASK, webhook_queue

log = logging.getLogger(__name__)


def publish_delivery(delivery_id: uuid.UUID, countdown: float | None = None) -> bool:
    """Send the message; on failure the delivery stays unpublished and the sweep retries."""
    try:
        # Marked before sending: once the message is out, a dispatcher may claim it (which
        # clears the mark) before a mark written afterwards would land.
        with session_scope() as session:
            set_published(session, delivery_id, True)
        app.send_task(
            WEBHOOK_TASK, args=[str(delivery_id)], queue=webhook_queue(get_settings()), countdown=countdown
        )
    except Exception:
        log.exception("could not publish webhook delivery %s; the sweep will retry", delivery_id)
        try:
            with session_scope() as session:
                set_published(session, delivery_id, False)
        except Exception:
            log.exception("could not unmark webhook delivery %s", delivery_id)
        return False
    return True
