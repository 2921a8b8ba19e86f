"""The one publisher: "run request X" and "attempt delivery X" messages, always sent after the
row they name is committed, and `unit_of_work`, the transaction that publishes the webhook
deliveries it made ready once it has committed.

Whatever is not published (a crash between commit and publish, the broker down) stays marked
unpublished in PostgreSQL, and the reconciler (queueing/reconcile.py) publishes it again.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from core.config import get_settings
from core.db import session_scope
from core.log_context import bound_request_id
from core.requests_table import mark_published
from core.webhook_outbox import set_published, take_ready
from queueing.broker import app
from queueing.queues import EDIT_TASK, WEBHOOK_TASK, queue_for, webhook_queue

log = logging.getLogger(__name__)

# The most messages published before their rows are marked in one UPDATE.
_BATCH = 256


def publish(request_id: uuid.UUID, priority: int) -> bool:
    """Send the message now; on failure the row stays unpublished and the reconciler retries."""
    sent = _send_many([(request_id, priority)])
    _mark(sent)
    return bool(sent)


def _send_many(items: list[tuple[uuid.UUID, int]]) -> list[uuid.UUID]:
    """Send a burst through one Redis pipeline (kombu's publish batch): one round trip instead of
    one per message, and the messages' client built once. Returns the ids that were sent; on an
    error none count as sent, and any that did go out are merely published again later."""
    settings = get_settings()
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=_BATCH):
            for request_id, priority in items:
                with bound_request_id(request_id):
                    app.send_task(
                        EDIT_TASK,
                        args=[str(request_id)],
                        queue=queue_for(settings, priority),
                        producer=producer,
                    )
    except Exception:
        log.exception("could not publish %d request(s); the reconciler will retry", len(items))
        return []
    return [request_id for request_id, _ in items]


def _mark(request_ids: list[uuid.UUID]) -> None:
    if not request_ids:
        return
    try:
        with session_scope() as session:
            mark_published(session, request_ids)
    except Exception:
        # Harmless: an unmarked row is merely published once more later.
        log.exception("could not mark %d request(s) as published", len(request_ids))


class BackgroundPublisher:
    """Publishes from one thread, so that the API answers a submit as soon as its row is
    committed and never waits on the broker. The rows of a burst are marked published with one
    UPDATE. Whatever is still queued when the process dies is unpublished in PostgreSQL, so the
    reconciler publishes it after its grace period: nothing is lost."""

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[tuple[uuid.UUID, int] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def enqueue(self, request_id: uuid.UUID, priority: int) -> None:
        self._ensure_thread()
        self._items.put((request_id, priority))

    def _ensure_thread(self) -> None:
        # After a fork the parent's thread is gone from the child: start our own.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._items.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._items.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            if items:
                _mark(_send_many(items))
            if len(items) < len(batch):
                return  # flush() asked to stop

    def flush(self, timeout: float = 5.0) -> None:
        """Publish what is queued and stop the thread (at shutdown)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return
        self._items.put(None)
        thread.join(timeout)
        self._thread = None


background = BackgroundPublisher()


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


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """`session_scope` for a transaction that may complete a request or make a webhook delivery
    ready (core.webhook_outbox records which in the session): once it has committed, those
    deliveries are published. A rollback publishes nothing, as their rows were never written."""
    with session_scope() as session:
        yield session
        # Taken before the commit at the end of session_scope: a failed commit raises past the
        # publishing below.
        ready = take_ready(session)
    for item in ready:
        publish_delivery(item.delivery_id, countdown=item.countdown_s)
