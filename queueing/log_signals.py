"""Celery's side of the request_id in logs: worker processes log in the configured format, every
published message carries the bound request_id in its headers, and each task runs with it bound.

So a line logged while a worker runs request X, or while a dispatcher delivers X's webhook, has
`request_id: X`, whichever process published the message (API, worker, reconciler).
"""

from __future__ import annotations

from typing import Any

from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

from core.log_context import bind_request_id, current_request_id
from core.logging_setup import configure_logging
from queueing.queues import EDIT_TASK

HEADER = "portrait_request_id"


@setup_logging.connect
def _configure(loglevel: int | str | None = None, **_: Any) -> None:
    # Connecting this signal stops Celery from installing its own handlers; `--loglevel` wins.
    configure_logging(level=loglevel or None)


@before_task_publish.connect
def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = current_request_id()
    if headers is not None and request_id and HEADER not in headers:
        headers[HEADER] = request_id


@task_prerun.connect
def _bind(task: Any = None, args: Any = None, **_: Any) -> None:
    request_id = getattr(task.request, HEADER, None) if task is not None else None
    if request_id is None and task is not None and task.name == EDIT_TASK and args:
        # Messages published without a context (the reconciler) still name their request.
        request_id = args[0]
    bind_request_id(request_id)


@task_postrun.connect
def _unbind(**_: Any) -> None:
    bind_request_id(None)
