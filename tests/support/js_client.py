"""The official JavaScript client (@fal-ai/client, pinned in tests/js/package-lock.json) on Node.

Installed once with `npm ci` into a user cache folder named after the lock file's hash (outside
the work tree, shared by checkouts; a new lock gets a fresh folder), then the scripts in tests/js
run on the same Node that runs the local S3 server.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from stack.npm import install_pinned
from stack.s3_server import node_executable

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CLIENT_PACKAGE = "@fal-ai/client"


def ensure_js_client(timeout: float = 300.0) -> Path:
    """The folder whose node_modules holds the pinned client (installed on first use)."""
    return install_pinned(
        JS_DIR, "js-client", CLIENT_PACKAGE, node=node_executable(), omit_dev=False, timeout=timeout
    )


def run_script(script: str, config: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Run tests/js/<script> with the config as JSON; it prints one JSON object last."""
    home = ensure_js_client()
    env = {**os.environ, "FAL_CLIENT_HOME": str(home)}
    done = subprocess.run(
        [str(node_executable()), str(JS_DIR / script), json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{script} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
