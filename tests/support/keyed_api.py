"""An API child with authentication on, and a key for it made in PostgreSQL (the API child shares
the database), for the CLI and playground tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.api_keys import create_key
from tests.support.processes import start_api


def new_key(name: str) -> str:
    key_id, secret = create_key(name)
    return f"{key_id}:{secret}"


@contextmanager
def keyed_api(env: dict[str, str], logs_dir: Path, name: str) -> Iterator[tuple[str, str]]:
    key = new_key(name)
    child, base = start_api({**env, "AUTH_MODE": "keys"}, logs_dir, name=name)
    try:
        yield base, key
    finally:
        child.stop()
