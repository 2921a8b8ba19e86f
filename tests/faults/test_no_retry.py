"""X-Fal-No-Retry: a request whose worker is lost fails with 503 runner_disconnected instead of
running again, however the loss is noticed (the dead process's Celery parent, a redelivered
message, the reconciler at lease expiry); requests without the header still run again."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from core import failures
from core.config import get_settings
from core.db import session_scope
from core.models import Status
from core.requests_table import (
    claim,
    claim_waiting,
    fail_no_retry_expired,
    fail_no_retry_of_worker,
    give_up_expired,
    requeue_expired,
)
from stack.servers import LocalStack
from tests.support.harness import (
    QUEUE_BASE,
    Service,
    base_env,
    pg_url,
    result,
    rows,
    running,
    submit,
    wait_all_completed,
    wait_for,
)
from tests.support.request_rows import insert_request, load_row

PAYLOAD = {"image_url": "https://example.com/a.png"}
NO_RETRY = {"X-Fal-No-Retry": "1"}


# -- the table's transitions, on the session's database ---------------------------------------


def _expire_lease(*request_ids: uuid.UUID) -> None:
    with session_scope() as session:
        session.execute(
            text("UPDATE requests SET lease_expires_at = now() - interval '1 second' WHERE id = ANY(:ids)"),
            {"ids": list(request_ids)},
        )


def _assert_disconnected(request_id: uuid.UUID, worker: str) -> None:
    row = load_row(request_id)
    assert (row.status, row.error_type, row.error_status, row.attempts, row.worker) == (
        Status.COMPLETED,
        "runner_disconnected",
        503,
        1,
        worker,
    )
    assert row.error_body == {"detail": row.error, "error_type": "runner_disconnected"}
    assert row.result_expires_at is not None and row.lease_expires_at is None


@pytest.mark.usefixtures("paused_reconciler")
def test_a_redelivered_message_never_reruns_a_no_retry_request() -> None:
    """The redelivered message first: while the lease holds nothing happens; once it ran out, the
    message's claim is refused and the worker's give-up fails the request, never a rerun."""
    from worker.processing import _give_up

    settings = get_settings()
    no_retry = insert_request(app_id="test/no-retry", payload=PAYLOAD, no_retry=True)
    plain = insert_request(app_id="test/no-retry", payload=PAYLOAD)
    with session_scope() as session:
        for rid in (no_retry, plain):
            assert claim(session, rid, worker="gone:1", lease_s=60, max_attempts=3) is not None
    with session_scope() as session:
        assert claim(session, no_retry, worker="next:2", lease_s=60, max_attempts=3) is None
    assert not _give_up(no_retry, settings)  # its lease still holds: the worker may be alive
    assert load_row(no_retry).status == Status.IN_PROGRESS
    _expire_lease(no_retry, plain)
    with session_scope() as session:
        assert claim(session, no_retry, worker="next:2", lease_s=60, max_attempts=3) is None
        assert claim(session, no_retry, worker="next:2", lease_s=60) is None  # with no limit either
        rerun = claim(session, plain, worker="next:2", lease_s=60, max_attempts=3)
        assert rerun is not None and rerun.attempts == 2  # without the header: today's rerun
    assert _give_up(no_retry, settings)
    _assert_disconnected(no_retry, "gone:1")


@pytest.mark.usefixtures("paused_reconciler")
def test_the_reconciler_fails_a_lost_no_retry_request_and_never_requeues_it() -> None:
    """The reconciler first: the row fails at lease expiry; a redelivered message then finds it
    ended. Requeueing refuses such a row whatever the order of the reconciler's steps."""
    rid = insert_request(app_id="test/no-retry", payload=PAYLOAD, no_retry=True)
    with session_scope() as session:
        assert claim(session, rid, worker="gone:1", lease_s=60, max_attempts=3) is not None
    with session_scope() as session:
        assert not fail_no_retry_expired(session, rid, failures.runner_disconnected())  # lease holds
    _expire_lease(rid)
    with session_scope() as session:
        assert requeue_expired(session, rid) is None
        assert not give_up_expired(session, rid, failures.runner_lost(3), max_attempts=3)
        assert fail_no_retry_expired(session, rid, failures.runner_disconnected())
    with session_scope() as session:
        assert claim(session, rid, worker="next:2", lease_s=60, max_attempts=3) is None
        assert not fail_no_retry_expired(session, rid, failures.runner_disconnected())
    _assert_disconnected(rid, "gone:1")


@pytest.mark.usefixtures("paused_reconciler")
def test_a_dead_process_fails_its_own_no_retry_requests_only() -> None:
    """What the Celery parent of a dead process runs: every running no-retry row of that process
    fails at once; its other rows, and other processes' rows, are left to their leases."""
    mine = [insert_request(app_id="test/no-retry", payload=PAYLOAD, no_retry=True) for _ in range(2)]
    plain = insert_request(app_id="test/no-retry", payload=PAYLOAD)
    other = insert_request(app_id="test/no-retry", payload=PAYLOAD, no_retry=True)
    with session_scope() as session:
        for rid in (*mine, plain):
            assert claim(session, rid, worker="host:41", lease_s=60) is not None
        assert claim(session, other, worker="host:4", lease_s=60) is not None
    with session_scope() as session:
        failed = fail_no_retry_of_worker(session, "host:41", failures.runner_disconnected())
    assert sorted(failed) == sorted(mine)
    for rid in mine:
        _assert_disconnected(rid, "host:41")
    assert load_row(plain).status == load_row(other).status == Status.IN_PROGRESS


@pytest.mark.usefixtures("paused_reconciler")
def test_a_waiting_no_retry_request_that_already_ran_is_not_claimed_again() -> None:
    """A no-retry row back in the queue after a run (none is requeued now; rows from before
    would be) is refused by both claims, so it never gets a second run."""
    rid = insert_request(app_id="test/no-retry-waiting", payload=PAYLOAD, no_retry=True)
    with session_scope() as session:
        session.execute(text("UPDATE requests SET attempts = 1 WHERE id = :id"), {"id": rid})
    with session_scope() as session:
        assert claim(session, rid, worker="w:1", lease_s=60, max_attempts=3) is None
        # Rolled back: the other waiting rows of the session's database are not this test's.
        taken = claim_waiting(session, worker="w:1", lease_s=60, max_attempts=3, limit=1000)
        assert rid not in [row.id for row in taken]
        session.rollback()
        session.execute(text("UPDATE requests SET attempts = 0 WHERE id = :id"), {"id": rid})
    with session_scope() as session:
        first = claim(session, rid, worker="w:1", lease_s=60, max_attempts=3)
        assert first is not None and first.attempts == 1


# -- real processes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(
    migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path
) -> Iterator[tuple[Service, str]]:
    # A short lease: the whole-worker kill is noticed at its expiry. The batch stays at one, so
    # each worker process holds one request at a time.
    svc = Service(base_env(migrated_stack, fault_weights, MAX_ATTEMPTS="3"), fault_logs / "no-retry")
    svc.logs.mkdir(exist_ok=True)
    try:
        base = svc.api()
        svc.worker("nr-a")
        yield svc, base
    finally:
        svc.close()


def _submit(base: str, headers: dict[str, str] | None = None) -> str:
    answer = submit(base, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["request_id"])


def _no_retry_column(env: dict[str, str], rid: str) -> bool:
    with psycopg.connect(pg_url(env), connect_timeout=5) as conn:
        found = conn.execute("SELECT no_retry FROM requests WHERE id = %s::uuid", (rid,)).fetchone()
    assert found is not None
    return bool(found[0])


def _finished_after(env: dict[str, str], rid: str, instant: float) -> float:
    """Seconds between `instant` (time.time()) and the row's finished_at."""
    with psycopg.connect(pg_url(env), connect_timeout=5) as conn:
        found = conn.execute(
            "SELECT extract(epoch FROM finished_at) FROM requests WHERE id = %s::uuid", (rid,)
        ).fetchone()
    assert found is not None
    return float(found[0]) - instant


def _assert_failed_once(base: str, env: dict[str, str], rid: str, worker: str) -> dict[str, Any]:
    found = wait_all_completed(env, [rid], timeout=60)[rid]
    assert (found["error_type"], found["attempts"], found["worker"]) == ("runner_disconnected", 1, worker)
    answer = result(base, rid)
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert set(body) == {"detail", "error_type"} and body["error_type"] == "runner_disconnected"
    assert "X-Fal-No-Retry" in body["detail"]
    return found


def _wait_running(svc: Service, rid: str) -> tuple[str, int]:
    return wait_for(lambda: next(iter(running(svc.env, [rid])), None), 120, f"{rid} in progress")


def _never_ran_again(svc: Service, rid: str, worker: str) -> None:
    """A few reconciler rounds and redeliveries later: still one run, by the same process, and
    no worker log shows a second start of it."""
    time.sleep(3)
    row = rows(svc.env, [rid])[rid]
    assert (row["attempts"], row["worker"], row["status"]) == (1, worker, "COMPLETED")
    for child in svc.children.values():
        assert child.log_text().count(f"[{rid}] fetching the input image") <= 1


def test_killed_pool_process_fails_its_no_retry_request_at_once(service: tuple[Service, str]) -> None:
    """SIGKILL of the process running the edit (an OOM kill): its Celery parent fails the request
    the moment it sees the process gone, long before the lease would run out."""
    svc, base = service
    rid = _submit(base, NO_RETRY)
    _, pid = _wait_running(svc, rid)
    worker = rows(svc.env, [rid])[rid]["worker"]
    name = svc.worker_holding(pid)
    assert name is not None
    time.sleep(0.5)  # inside the edit (its stages are stretched by FAULT_STAGE_DELAY_S)
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    svc.worker(f"{name}-b")  # a fresh worker, free to take the message that comes back
    _assert_failed_once(base, svc.env, rid, worker)
    took = _finished_after(svc.env, rid, killed_at)
    print(f"no-retry failure {took:.2f}s after the pool process's SIGKILL")
    # The parent failed it, not the reconciler: Celery reports the lost process at once or
    # after worker_lost_wait, which need not come before this test's short lease.
    assert (
        f"process {pid} was lost: failed 1 X-Fal-No-Retry request(s) {rid}" in svc.children[name].log_text()
    )
    _never_ran_again(svc, rid, worker)


def test_killed_worker_fails_its_no_retry_request_at_lease_expiry(service: tuple[Service, str]) -> None:
    """SIGKILL of the whole worker (a vanished machine): nothing is left to notice but the
    lease; the reconciler fails the request then, and the new worker never runs it. A request
    without the header, lost the same way, runs again on the new worker."""
    svc, base = service
    rid = _submit(base, NO_RETRY)
    _, pid = _wait_running(svc, rid)
    worker = rows(svc.env, [rid])[rid]["worker"]
    time.sleep(0.5)
    name = svc.worker_holding(pid)
    assert name is not None
    killed_at = time.time()
    svc.kill_group(name)
    svc.worker(f"{name}-next")
    _assert_failed_once(base, svc.env, rid, worker)
    took = _finished_after(svc.env, rid, killed_at)
    print(f"no-retry failure {took:.2f}s after the whole worker's SIGKILL (LEASE_S={svc.env['LEASE_S']})")
    _never_ran_again(svc, rid, worker)

    plain = _submit(base)
    _, pid = _wait_running(svc, plain)
    time.sleep(0.5)
    name = svc.worker_holding(pid)
    assert name is not None
    svc.kill_group(name)
    svc.worker(f"{name}-again")
    found = wait_all_completed(svc.env, [plain], timeout=120)[plain]
    assert found["error_type"] is None and found["attempts"] == 2
    assert result(base, plain).status_code == 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("yes", True), ("TRUE", True), ("Yes", True), ("0", False), (None, False)],
)
def test_no_retry_header_values(service: tuple[Service, str], value: str | None, expected: bool) -> None:
    svc, base = service
    rid = _submit(base, {"X-Fal-No-Retry": value} if value is not None else {})
    # Cancelled while it waits, so that these cost the worker nothing.
    httpx.put(f"{base}/{QUEUE_BASE}/requests/{rid}/cancel", timeout=10)
    assert _no_retry_column(svc.env, rid) is expected
