"""Requests that wait: queue positions, cancellation in the queue, and what the reconciler and a
worker without weights do. The API here publishes to queues that no worker consumes until a test
starts one."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from core.db import session_scope
from core.models import Priority
from core.requests_table import get
from tests.support.client_helpers import APP, cancel, result, status, submit, wait_completed
from tests.support.image_server import ImageServer
from tests.support.processes import start_worker
from tests.support.request_rows import insert_request


def _queues(env: dict[str, str]) -> str:
    return f"{env['QUEUE_NAME']}.normal,{env['QUEUE_NAME']}.low"


def test_positions_cancel_and_never_run_after_cancel(
    idle_api: tuple[str, dict[str, str]], image_server: ImageServer, logs_dir: Path
) -> None:
    api, env = idle_api
    bad = {"image_url": image_server.url("not-an-image.txt")}  # fails fast once it runs
    broker = redis.Redis.from_url(env["REDIS_URL"])

    def queued() -> tuple[int, int]:
        return broker.llen(f"{env['QUEUE_NAME']}.normal"), broker.llen(f"{env['QUEUE_NAME']}.low")

    # Other modules share this idle API: messages of requests they left (cancelled, so never run)
    # stay in its queues until a worker takes them.
    left_normal, left_low = queued()
    low = submit(api, bad, headers={"x-fal-queue-priority": "low"})
    normal = [submit(api, bad, headers={"x-fal-queue-priority": "normal"}) for _ in range(3)]
    base = normal[0]["queue_position"]
    # The session's database is shared: low-priority rows other modules left waiting are ahead of
    # this one too (base already counts the normal ones).
    earlier_low = _waiting_low_before(low["request_id"])
    assert [s["queue_position"] for s in normal] == [base, base + 1, base + 2]

    def position(sub: dict[str, str]) -> int:
        response = status(api, sub["request_id"])
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "IN_QUEUE"
        return int(body["queue_position"])

    # The low-priority request was submitted first but waits behind every normal one.
    assert position(low) == base + 3 + earlier_low
    # One message per request, each in its priority's queue (published just after the answer).
    expected = (left_normal + 3, left_low + 1)
    deadline = time.monotonic() + 5
    while queued() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queued() == expected

    victim = normal[1]
    response = cancel(api, victim["request_id"])
    assert (response.status_code, response.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    done = status(api, victim["request_id"]).json()
    assert done["status"] == "COMPLETED" and done["error_type"] == "client_cancelled"
    assert result(api, victim["request_id"]).status_code == 499
    assert position(normal[2]) == base + 1 and position(low) == base + 2 + earlier_low
    assert cancel(api, victim["request_id"]).json() == {"status": "ALREADY_COMPLETED"}

    worker = start_worker(env, logs_dir, "idle-worker", _queues(env))
    try:
        for sub in (normal[0], normal[2], low):
            assert wait_completed(api, sub["request_id"], timeout=60)["error_type"] == "image_load_error"
        _assert_never_started(victim["request_id"])

        # A committed row whose message never reached the broker is published by the reconciler.
        orphan = insert_request(app_id=APP, payload=bad, priority=Priority.NORMAL.value)
        _age(orphan)
        subprocess.run([sys.executable, "-m", "worker.reconcile", "--once"], env=env, check=True, timeout=60)
        assert wait_completed(api, str(orphan), timeout=60)["error_type"] == "image_load_error"
    finally:
        worker.stop()
    _assert_never_started(victim["request_id"])


def _waiting_low_before(request_id: str) -> int:
    """Waiting low-priority rows queued before this one: in the queue's order, ahead of it."""
    with session_scope() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM requests r, requests me WHERE me.id = :id"
                    " AND r.status = 'IN_QUEUE' AND r.priority = me.priority"
                    " AND (r.queued_at, r.id) < (me.queued_at, me.id)"
                ),
                {"id": uuid.UUID(request_id)},
            ).scalar_one()
        )


def _age(request_id: uuid.UUID) -> None:
    """Make a row look as if it was committed a minute ago and its publish was lost."""
    with session_scope() as session:
        session.execute(
            text("UPDATE requests SET queued_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": request_id},
        )


def _assert_never_started(request_id: str) -> None:
    with session_scope() as session:
        row = get(session, uuid.UUID(request_id))
        assert row is not None and row.started_at is None and row.attempts == 0 and row.worker is None


def test_missing_weights_fail_requests_clearly(
    migrated: dict[str, str], api: str, image_server: ImageServer, logs_dir: Path, tmp_path: Path
) -> None:
    env = {
        **migrated,
        "QUEUE_NAME": migrated["QUEUE_NAME"] + "noweights",
        "WEIGHTS_DIR": str(tmp_path / "none"),
    }
    worker = start_worker(env, logs_dir, "no-weights-worker", _queues(env))
    try:
        request_id = insert_request(
            app_id=APP, payload={"image_url": image_server.url("face.jpg")}, priority=0
        )
        # Published by hand to this worker's queue (publish marks the row published, so that the
        # API's own reconciler leaves it alone).
        publish = f"import uuid; from queueing.publish import publish; publish(uuid.UUID('{request_id}'), 0)"
        subprocess.run([sys.executable, "-c", publish], env=env, check=True, timeout=60)
        done = wait_completed(api, str(request_id), timeout=60)
    finally:
        worker.stop()
    assert done["error_type"] == "weights_error"
    assert "model weights not installed" in done["error"]
    response = result(api, str(request_id))
    assert response.status_code == 503 and response.json()["error_type"] == "weights_error"


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_bad_request_timeout_header(api: str, value: str) -> None:
    import httpx

    response = httpx.post(
        f"{api}/{APP}",
        json={"image_url": "https://example.com/a.png"},
        headers={"x-fal-request-timeout": value},
    )
    assert response.status_code == 422
