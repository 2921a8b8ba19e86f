"""Celery tasks and worker-process hooks."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.signals import worker_process_init
from celery.worker.request import Request

from core.config import get_settings
from core.db import reset_engine
from queueing.broker import app
from queueing.queues import EDIT_TASK
from worker import engine_runtime
from worker.processing import fail_lost_no_retry, run_request

log = logging.getLogger(__name__)


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    # Runs in each forked child: fresh DB connections, then the model (CUDA starts here).
    reset_engine()
    engine_runtime.load(get_settings())


class EditRequest(Request):  # type: ignore[misc]
    """An edit message in the worker's parent process, which is the first to know when the pool
    process running it died: the X-Fal-No-Retry requests that process held fail at once, before
    the message goes back to the queue (where it finds them ended)."""

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        # A child that exited mid-task is lost too, unless this worker killed it on purpose (as
        # Celery's own handling below tells them apart).
        exited = isinstance(exc, SystemExit | KeyboardInterrupt) and not (
            self._already_cancelled or self._already_revoked
        )
        if (isinstance(exc, WorkerLostError) or exited) and self.worker_pid:
            try:
                failed = fail_lost_no_retry(int(self.worker_pid))
            except Exception:  # their leases still run out, and the reconciler fails them then
                log.exception(
                    "could not fail the X-Fal-No-Retry requests of lost process %s", self.worker_pid
                )
            else:
                if failed:
                    log.warning(
                        "process %s was lost: failed %d X-Fal-No-Retry request(s) %s",
                        self.worker_pid,
                        len(failed),
                        ", ".join(map(str, failed)),
                    )
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


@app.task(name=EDIT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True, Request=EditRequest)
def edit(request_id: str) -> None:
    run_request(uuid.UUID(request_id))
