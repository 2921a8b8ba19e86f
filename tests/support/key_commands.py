"""API keys made the way an operator makes them, with `python -m api.keys`, against the database
of a service's settings (the fault tests' services run in keys mode)."""

from __future__ import annotations

import subprocess
import sys


def keys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.keys", *args], env=env, capture_output=True, text=True, timeout=60
    )


def new_key(env: dict[str, str], name: str) -> dict[str, str]:
    """A new key's Authorization header."""
    done = keys_cli(env, "create", name)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]  # the last line is key_id:secret
    return {"Authorization": f"Key {key}"}
