"""Status bodies: the keys fal's clients read, for each state of a request."""

from __future__ import annotations

import uuid
from typing import Any

from api.status_view import RequestUrls, status_body
from core import failures
from core.clock import utcnow
from core.models import Status
from core.requests_table import RequestView


def _row(status: Status, **values: Any) -> RequestView:
    return RequestView(
        id=uuid.uuid4(),
        app_id="fal-ai/live-portrait/image",
        status=status.value,
        priority=0,
        owner_key_id=None,
        queued_at=utcnow(),
        logs=[],
        **values,
    )


def test_status_bodies_carry_the_keys_the_clients_need() -> None:
    urls = RequestUrls.build("http://h:1/", "fal-ai/live-portrait", "abc")
    assert urls.status_url == "http://h:1/fal-ai/live-portrait/requests/abc/status"
    queued = status_body(_row(Status.IN_QUEUE, queue_position=3), urls, logs=None)
    assert queued["queue_position"] == 3
    running = status_body(_row(Status.IN_PROGRESS), urls, logs=None)
    assert "logs" in running and running["logs"] is None
    failure = failures.cancelled()
    done = status_body(
        _row(Status.COMPLETED, error=failure.message, error_type=failure.error_type, metrics={"x": 1}),
        urls,
        logs=[],
    )
    assert done["error_type"] == "client_cancelled" and done["logs"] == [] and done["metrics"] == {"x": 1}
