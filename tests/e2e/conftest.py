"""Fixtures of the end-to-end tests only: an API whose requests wait until a test starts a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import start_api


@pytest.fixture(scope="session")
def idle_api(migrated: dict[str, str], logs_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An API publishing to queues no worker consumes: its requests stay queued until a test says."""
    env = {**migrated, "QUEUE_NAME": migrated["QUEUE_NAME"] + "idle", "RECONCILE_INTERVAL_S": "0"}
    child, base = start_api(env, logs_dir, name="idle-api")
    yield base, env
    child.stop()
