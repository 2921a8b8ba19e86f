"""Celery tasks and worker-process hooks."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.signals import worker_process_init

from core.config import get_settings
from core.db import reset_engine
from queueing.broker import app
from queueing.queues import EDIT_TASK
from worker import engine_runtime
from worker.processing import run_request

log = logging.getLogger(__name__)


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    # Runs in each forked child: fresh DB connections, then the model (CUDA starts here).
    reset_engine()
    engine_runtime.load(get_settings())


@app.task(name=EDIT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def edit(request_id: str) -> None:
    run_request(uuid.UUID(request_id))
