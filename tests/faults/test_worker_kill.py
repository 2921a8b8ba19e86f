"""Workers SIGKILLed in the middle of an edit: the request runs again elsewhere and completes
once; a request that kills every worker that runs it fails after MAX_ATTEMPTS runs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.servers import LocalStack
from tests.support.harness import (
    SCALE,
    Ledger,
    Service,
    base_env,
    result,
    rows,
    running,
    submit_many,
    wait_all_completed,
    wait_for,
)

MAX_ATTEMPTS = 2


@pytest.fixture(scope="module")
def service(
    migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path
) -> Iterator[tuple[Service, str]]:
    svc = Service(
        base_env(migrated_stack, fault_weights, MAX_ATTEMPTS=str(MAX_ATTEMPTS)), fault_logs / "kill"
    )
    svc.logs.mkdir(exist_ok=True)
    try:
        base = svc.api()
        svc.worker("kill-a")
        svc.worker("kill-b")
        yield svc, base
    finally:
        svc.close()


def test_killed_worker_request_runs_again_and_completes_once(service: tuple[Service, str]) -> None:
    svc, base = service
    ledger = Ledger("worker_kill")
    ids: list[str] = []
    victims: set[str] = set()
    for round_ in range(SCALE + 1):
        # Fresh work each round, then kill whoever runs one of these requests, mid-edit.
        fresh = submit_many(base, 2)
        ids += fresh
        rid, pid = wait_for(
            lambda f=fresh: next(iter(running(svc.env, f)), None), 120, "a request in progress"
        )
        time.sleep(0.5)  # well inside the edit (stages are stretched by FAULT_STAGE_DELAY_S)
        killed_at = time.monotonic()
        name = svc.worker_holding(pid)
        assert name is not None
        if round_ % 2:
            svc.kill_group(name)  # the whole worker: a machine that vanished
            svc.worker(name)
        else:
            os.kill(pid, signal.SIGKILL)  # the pool process only: an OOM kill
        victims.add(rid)
        wait_all_completed(svc.env, [rid], timeout=120)
        ledger.recovery_s.append(round(time.monotonic() - killed_at, 2))
    found = wait_all_completed(svc.env, ids, timeout=180)
    ledger.settle(svc.env, ids)
    for rid in victims:
        assert found[rid]["attempts"] == 2, found[rid]
        assert result(base, rid).status_code == 200


def test_request_killing_every_worker_fails_after_max_attempts(service: tuple[Service, str]) -> None:
    svc, base = service
    ledger = Ledger("poison_request")
    [rid] = submit_many(base, 1)
    started = time.monotonic()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        _, pid = wait_for(
            lambda a=attempt: next(iter(running(svc.env, [rid], a)), None), 120, f"run {attempt}"
        )
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
    found = wait_all_completed(svc.env, [rid], timeout=60)
    ledger.recovery_s.append(round(time.monotonic() - started, 2))
    ledger.settle(svc.env, [rid], expect_ok=False)
    assert found[rid]["error_type"] == "runner_disconnected", found[rid]
    assert found[rid]["attempts"] == MAX_ATTEMPTS  # never a third run
    answer = result(base, rid)
    assert answer.status_code == 503
    assert answer.json()["error_type"] == "runner_disconnected"
    assert "lost" in answer.json()["detail"]
    time.sleep(2)
    assert rows(svc.env, [rid])[rid]["attempts"] == MAX_ATTEMPTS
