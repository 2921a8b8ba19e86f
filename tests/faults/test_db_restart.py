"""PostgreSQL restarted while requests wait and run: the API answers 503 in fal's shape while it
is down (never 500) and recovers by itself; workers finish their edits and record them once it
is back. Nothing is lost, nothing runs twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.migrate import upgrade
from stack.postgres_server import RunningPostgres, start_postgres
from stack.servers import LocalStack
from tests.support.harness import (
    QUEUE_BASE,
    SCALE,
    Ledger,
    Service,
    base_env,
    running,
    status,
    submit,
    submit_many,
    wait_all_completed,
    wait_for,
)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningPostgres]]:
    holder = [start_postgres(tmp_path_factory.mktemp("fault-pg"), persistent=False)]
    upgrade(holder[0].url)
    yield holder
    holder[0].stop()


@pytest.fixture(scope="module")
def service(
    migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path, database: list[RunningPostgres]
) -> Iterator[tuple[Service, str]]:
    env = base_env(migrated_stack, fault_weights, DATABASE_URL=database[0].url, LEASE_S="10")
    svc = Service(env, fault_logs / "db")
    svc.logs.mkdir(exist_ok=True)
    try:
        base = svc.api()
        svc.worker("db-a")
        svc.worker("db-b")
        yield svc, base
    finally:
        svc.close()


def test_database_restart(service: tuple[Service, str], database: list[RunningPostgres]) -> None:
    svc, base = service
    ledger = Ledger("db_restart")
    ids: list[str] = []
    for _ in range(SCALE):
        fresh = submit_many(base, 4)
        ids += fresh
        wait_for(lambda f=fresh: running(svc.env, f), 120, "a request in progress")
        server = database[0]
        server.stop()
        down_at = time.monotonic()
        for answer in (status(base, fresh[0]), submit(base)):
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["error_type"] == "service_unavailable" and body["detail"]
            assert answer.headers["Retry-After"]
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 503
        time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))
        database[0] = start_postgres(server.data_dir, server.port, persistent=False)
        # The API recovers by itself (pooled connections are pre-pinged, dead ones replaced).
        wait_for(lambda f=fresh: status(base, f[0]).status_code in (200, 202), 30, "the API to recover")
        wait_all_completed(svc.env, ids, timeout=180)
        ledger.recovery_s.append(round(time.monotonic() - down_at, 2))
    found = ledger.settle(svc.env, ids)
    assert all(row["has_output"] for row in found.values())
    answer = httpx.get(f"{base}/{QUEUE_BASE}/requests/{ids[0]}", timeout=10)
    assert answer.status_code == 200 and answer.json()["image"]["url"]
