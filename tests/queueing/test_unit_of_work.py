"""Publishing after commit, against the real PostgreSQL and Redis: only `unit_of_work` publishes
the webhook deliveries a transaction made ready, and only once it has committed. A plain session
publishes nothing (no session hook anywhere), and neither does a rolled-back unit.

The transactions run in a child process with its own QUEUE_NAME: this process's Celery app was
configured before the test servers' settings existed, and no dispatcher consumes that queue, so a
published delivery stays marked published.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select

from core.db import session_scope
from core.models import Priority, RequestRow
from core.requests_table import claim
from core.webhook_models import WebhookDelivery
from tests.support.databases import reconciler_paused
from tests.support.request_rows import insert_request

PAYLOAD = {"image_url": "https://example.com/a.png"}
# Never reached: each test deletes its request (and so its delivery) before the lock is let go.
HOOK = "https://example.com/hook"
COMPLETE = """
import sys, uuid
from core.db import session_scope
from core.requests_table import complete_ok
from queueing.publish import unit_of_work

mode, request_id, attempt = sys.argv[1], uuid.UUID(sys.argv[2]), int(sys.argv[3])
scope = session_scope if mode == "plain" else unit_of_work
try:
    with scope() as session:
        assert complete_ok(session, request_id, attempt, output={}, metrics={})
        if mode == "rollback":
            raise RuntimeError("abandon the transaction")
except RuntimeError:
    pass
"""


@pytest.fixture()
def sweep_paused(migrated: dict[str, str]) -> Iterator[None]:
    """No API process's sweep may publish the deliveries these tests leave unpublished."""
    with reconciler_paused():
        yield


@pytest.fixture()
def claimed(sweep_paused: None) -> Iterator[tuple[uuid.UUID, int]]:
    request_id = insert_request(
        app_id="test/unit-of-work", payload=PAYLOAD, priority=Priority.NORMAL.value, webhook_url=HOOK
    )
    with session_scope() as session:
        row = claim(session, request_id, worker="w", lease_s=60, max_attempts=3)
    assert row is not None
    yield request_id, row.attempts
    # The delivery goes with its request: nothing is left for a dispatcher after the test.
    with session_scope() as session:
        session.execute(delete(RequestRow).where(RequestRow.id == request_id))


def _complete(env: dict[str, str], mode: str, request_id: uuid.UUID, attempt: int) -> None:
    own_queue = {**env, "QUEUE_NAME": env["QUEUE_NAME"] + "unitofwork"}
    command = [sys.executable, "-c", COMPLETE, mode, str(request_id), str(attempt)]
    subprocess.run(command, env=own_queue, check=True, timeout=60)


def _deliveries(request_id: uuid.UUID) -> list[WebhookDelivery]:
    with session_scope() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.request_id == request_id)
        return list(session.execute(query).scalars())


def test_a_plain_session_publishes_nothing(migrated: dict[str, str], claimed: tuple[uuid.UUID, int]) -> None:
    _complete(migrated, "plain", *claimed)
    (delivery,) = _deliveries(claimed[0])
    # Left to the sweep.
    assert delivery.published_at is None


def test_unit_of_work_publishes_after_its_commit(
    migrated: dict[str, str], claimed: tuple[uuid.UUID, int]
) -> None:
    _complete(migrated, "unit", *claimed)
    (delivery,) = _deliveries(claimed[0])
    assert delivery.published_at is not None


def test_a_rolled_back_unit_publishes_nothing(
    migrated: dict[str, str], claimed: tuple[uuid.UUID, int]
) -> None:
    _complete(migrated, "rollback", *claimed)
    assert _deliveries(claimed[0]) == []
    # The same completion, committed this time, is published.
    _complete(migrated, "unit", *claimed)
    (delivery,) = _deliveries(claimed[0])
    assert delivery.published_at is not None
