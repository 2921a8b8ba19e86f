"""Session-scoped real servers for tests: PostgreSQL, Redis and S3 from stack.servers.

A pytest plugin: tests/conftest.py lists it in `pytest_plugins`, so every test package sees
`local_stack`. The servers start once per test session, on free ports under a pytest temporary
folder, through the same LocalStack code that `make run` uses; only the fsyncs are off
(persistent=False), which is what makes the difference in speed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack.servers import LocalStack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("local-stack"), persistent=False) as stack:
        yield stack
