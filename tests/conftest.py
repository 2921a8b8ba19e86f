"""Shared pytest setup. Server fixtures are session-scoped and lazy: engine tests start nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real PostgreSQL, Redis and S3 servers (`local_stack`), started once per session on demand,
# and the service over them (settings, API and worker processes, test images) that every test
# package which runs the service shares.
pytest_plugins = ["tests.support.stack_fixture", "tests.support.service_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
