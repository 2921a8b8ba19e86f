"""Redis restarted (without persistence: every queued and unacknowledged message is lost) while
requests wait and run, and requests submitted while it is down: the reconciler publishes again
whatever PostgreSQL says is waiting and takes back what no worker holds. Nothing is lost, nothing
runs twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.process import RunningServer
from stack.redis_server import start_redis
from stack.servers import LocalStack
from tests.support.harness import (
    SCALE,
    Ledger,
    Service,
    base_env,
    running,
    submit,
    submit_many,
    wait_all_completed,
    wait_for,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningServer]]:
    # A list so that the test can swap in the restarted server and teardown stops that one.
    holder = [start_redis(tmp_path_factory.mktemp("fault-redis"), persistent=False)]
    yield holder
    holder[0].stop()


@pytest.fixture(scope="module")
def service(
    migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path, broker: list[RunningServer]
) -> Iterator[tuple[Service, str]]:
    env = base_env(migrated_stack, fault_weights, REDIS_URL=broker[0].url)
    svc = Service(env, fault_logs / "broker")
    svc.logs.mkdir(exist_ok=True)
    try:
        base = svc.api()
        svc.worker("broker-a")
        svc.worker("broker-b")
        yield svc, base
    finally:
        svc.close()


def test_redis_restart_loses_no_request(service: tuple[Service, str], broker: list[RunningServer]) -> None:
    svc, base = service
    ledger = Ledger("broker_restart")
    ids: list[str] = []
    for _ in range(SCALE):
        fresh = submit_many(base, 4)
        ids += fresh
        wait_for(lambda f=fresh: running(svc.env, f), 120, "a request in progress")
        server = broker[0]
        server.stop()  # queued and unacknowledged messages are gone with it
        down_at = time.monotonic()
        # Accepted while the broker is down: committed in PostgreSQL, published later.
        for _ in range(2):
            answer = submit(base)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])
        time.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))
        broker[0] = start_redis(server.data_dir, server.port, persistent=False)
        wait_all_completed(svc.env, ids, timeout=180)
        ledger.recovery_s.append(round(time.monotonic() - down_at, 2))
    ledger.settle(svc.env, ids)
