"""Time limits: a request that runs past TASK_SOFT_TIME_LIMIT_S ends with 504 request_timeout (the
worker stops it and survives), and one that has not started by its X-Fal-Request-Timeout ends
with 504 request_timeout without ever running, even while no worker is free to notice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.servers import LocalStack
from tests.support.client_helpers import QUEUE_BASE
from tests.support.harness import Ledger, Service, base_env, result, status, submit, wait_all_completed


@pytest.fixture(scope="module")
def service(
    migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path
) -> Iterator[tuple[Service, str]]:
    env = base_env(
        migrated_stack,
        fault_weights,
        # Every edit takes over 5 s here (0.5 s per stage), so each one hits the 2 s limit.
        FAULT_STAGE_DELAY_S="0.5",
        TASK_SOFT_TIME_LIMIT_S="2",
        TASK_TIME_LIMIT_S="4",
    )
    svc = Service(env, fault_logs / "timeouts")
    svc.logs.mkdir(exist_ok=True)
    try:
        base = svc.api()
        svc.worker("timeouts-a")  # one worker: a second request must wait
        yield svc, base
    finally:
        svc.close()


def test_run_time_limit_and_start_deadline(service: tuple[Service, str]) -> None:
    svc, base = service
    ledger = Ledger("timeouts")
    slow = submit(base).json()["request_id"]
    # Waits behind `slow` on the only worker, longer than its one-second start timeout.
    late = submit(base, headers={"X-Fal-Request-Timeout": "1"}).json()["request_id"]
    found = wait_all_completed(svc.env, [slow, late], timeout=60)
    ledger.settle(svc.env, [slow, late], expect_ok=False)

    assert found[slow]["error_type"] == "request_timeout" and found[slow]["attempts"] == 1
    answer = result(base, slow)
    assert answer.status_code == 504
    assert answer.json() == {"detail": "Request timed out", "error_type": "request_timeout"}
    assert answer.headers["x-fal-error-type"] == "request_timeout"
    # The service's own time limit, not the caller's: fal's clients may retry it.
    assert "x-fal-request-timeout-type" not in answer.headers

    assert found[late]["error_type"] == "request_timeout"
    assert found[late]["attempts"] == 0  # never ran
    answer = result(base, late)
    assert answer.status_code == 504 and "before it could start" in answer.json()["detail"]
    # The caller's X-Fal-Request-Timeout ran out: fal says so, on every answer about it.
    assert answer.headers["x-fal-request-timeout-type"] == "user"
    assert answer.headers["x-fal-error-type"] == "request_timeout"
    assert status(base, late).headers["x-fal-request-timeout-type"] == "user"
    stream_url = f"{base}/{QUEUE_BASE}/requests/{late}/status/stream"
    with httpx.stream("GET", stream_url, timeout=30) as stream:
        assert stream.headers["x-fal-request-timeout-type"] == "user"
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[-1][len("data: ") :])["error_type"] == "request_timeout"

    # The worker survived its time limit and still runs the next request (which times out too).
    again = submit(base).json()["request_id"]
    assert wait_all_completed(svc.env, [again], timeout=60)[again]["error_type"] == "request_timeout"


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf"])
def test_bad_request_timeout_header_is_422(service: tuple[Service, str], value: str) -> None:
    _, base = service
    answer = submit(base, headers={"X-Fal-Request-Timeout": value})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == [
        "header",
        "x-fal-request-timeout",
    ]
