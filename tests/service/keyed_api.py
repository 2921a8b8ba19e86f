"""An API child with authentication on, and a key for it, for the CLI and playground tests.

With [05]'s AUTH_MODE and api.keys present, a key is made in PostgreSQL (the API child shares the
database); otherwise a static key is passed through API_KEYS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.service.processes import start_api

STATIC_KEY = "ux-tests:ux-secret"


def new_key(name: str) -> str | None:
    """key_id:secret from PostgreSQL, or None where api.keys is not available."""
    try:
        from api.keys import create_key
    except ImportError:
        return None
    key_id, secret = create_key(name)
    return f"{key_id}:{secret}"


@contextmanager
def keyed_api(env: dict[str, str], logs_dir: Path, name: str) -> Iterator[tuple[str, str]]:
    key = new_key(name)
    child_env = {**env, "AUTH_MODE": "keys"}
    if key is None:
        key = STATIC_KEY
        child_env["API_KEYS"] = STATIC_KEY
    child, base = start_api(child_env, logs_dir, name=name)
    try:
        yield base, key
    finally:
        child.stop()
