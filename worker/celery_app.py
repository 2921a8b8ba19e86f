"""The worker processes' Celery entry point: `celery -A worker.celery_app worker -Q …`, for the
edit workers and the webhook dispatchers alike.

The app itself, and the task modules it includes, are configured in queueing/broker.py; every
other process publishes through that module and never imports this one.
"""

from __future__ import annotations

from queueing import broker

# `celery -A worker.celery_app` looks for this name.
app = broker.app
