"""The Celery application, configured for long GPU tasks (see README.md, "Architecture").

Every process that publishes (API, reconciler, workers, dispatchers) uses this one app; the
worker processes start from worker/celery_app.py, which re-exports it. The task modules are
included by name, so that importing this module loads neither them nor torch or CUDA: the API
imports it to publish, and the worker's parent process forks children that load the model
themselves.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from core.config import Settings, get_settings
from queueing import log_signals  # noqa: F401  (connects the logging and request_id signals)
from queueing.heartbeat import WorkerHeartbeat
from queueing.queues import all_queues, queue_for, webhook_queue

# Imported by the worker processes only (Celery's `include`), never here.
TASK_MODULES = ["worker.tasks", "webhooks.tasks"]


def create_app(settings: Settings) -> Celery:
    app = Celery("portrait_queue", broker=settings.redis_url, include=TASK_MODULES)
    visibility = settings.visibility_timeout_s
    app.conf.update(
        # A task is acknowledged when it ends, and requeued if its process dies mid-way; the
        # claim in PostgreSQL (with its attempts counter) makes redelivery safe and bounded.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        # One request per process at a time, none reserved behind a running one.
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        worker_concurrency=settings.worker_concurrency,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        # Redis redelivers unacknowledged messages after this; it must exceed the hard limit.
        broker_transport_options={
            "visibility_timeout": visibility,
            "queue_order_strategy": "priority",
            "socket_connect_timeout": 5,
        },
        visibility_timeout=visibility,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=30.0,
        broker_connection_retry_on_startup=True,
        # PostgreSQL holds every state and result; Celery only carries "run request X".
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=queue_for(settings, 0),
        # Each queue gets its own exchange and key: a shared default exchange would bind every
        # queue to the same key and copy each message into all of them.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in [*all_queues(settings), webhook_queue(settings)]
        ],
        task_create_missing_queues=False,
        task_serializer="json",
        accept_content=["json"],
        # A publish that cannot reach Redis fails fast; the row stays queued for the reconciler.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    # Liveness in Redis for /metrics' worker count and the containers' health checks.
    app.steps["consumer"].add(WorkerHeartbeat)
    return app


app = create_app(get_settings())
