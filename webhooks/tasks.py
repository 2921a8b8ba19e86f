"""The webhook dispatcher's task, consumed from `<QUEUE_NAME>.webhooks` only, by workers started
with `-Q <QUEUE_NAME>.webhooks -P threads`: slow receivers never hold a GPU worker."""

from __future__ import annotations

import uuid

from queueing.broker import app
from queueing.queues import WEBHOOK_TASK
from webhooks.deliver import attempt_delivery


@app.task(name=WEBHOOK_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver(delivery_id: str) -> None:
    attempt_delivery(uuid.UUID(delivery_id))
