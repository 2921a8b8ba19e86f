"""Fixtures of the fault tests: tiny weights and a log folder; each module builds its service."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fault_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.liveportrait.testing import write_random_weights

    return write_random_weights(tmp_path_factory.mktemp("fault-weights"), arch="tiny")


@pytest.fixture(scope="session")
def fault_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-logs")


@pytest.fixture(scope="session")
def migrated_stack(local_stack):  # type: ignore[no-untyped-def]
    from core.migrate import upgrade

    upgrade(local_stack.database_url)
    return local_stack


@pytest.fixture(scope="session")
def standard_service(migrated_stack, fault_weights: Path, fault_logs: Path):  # type: ignore[no-untyped-def]
    """One API in keys mode and two workers shared by the cancel, retention and hostile-input
    tests (none of which restarts anything): yields (service, base URL, auth headers)."""
    from tests.support.harness import Service, base_env
    from tests.support.key_commands import new_key

    env = base_env(
        migrated_stack,
        fault_weights,
        AUTH_MODE="keys",
        FAULT_STAGE_DELAY_S="0.15",
        RETENTION_SWEEP_INTERVAL_S="0.5",
        MAX_JSON_BODY_BYTES=str(4 * 1024 * 1024),
        BODY_READ_TIMEOUT_S="2",
        MAX_INPUT_PIXELS="4000000",
        KEY_MAX_IN_FLIGHT="100000",
        KEY_MAX_SUBMITS_PER_MINUTE="100000",
    )
    svc = Service(env, fault_logs / "standard")
    svc.logs.mkdir(exist_ok=True)
    try:
        base = svc.api()
        svc.worker("std-a")
        svc.worker("std-b")
        yield svc, base, new_key(env, "standard")
    finally:
        svc.close()
