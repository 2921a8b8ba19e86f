"""Broker queue names: one per priority, consumed in priority order by every worker."""

from __future__ import annotations

from core.config import Settings
from core.models import Priority

EDIT_TASK = "portrait.edit"
WEBHOOK_TASK = "portrait.webhook"


def queue_for(settings: Settings, priority: int) -> str:
    return f"{settings.queue_name}.{Priority(priority).name.lower()}"


def all_queues(settings: Settings) -> list[str]:
    return [queue_for(settings, p) for p in sorted(Priority)]


def webhook_queue(settings: Settings) -> str:
    # Its own queue, consumed by dispatchers only: GPU workers never wait on a slow receiver.
    return f"{settings.queue_name}.webhooks"
