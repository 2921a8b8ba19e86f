"""The official JavaScript client (@fal-ai/client, pinned in tests/js/package-lock.json) on Node.

Installed once with `npm ci` into a user cache folder named after the lock file's hash (outside
the work tree, shared by checkouts; a new lock gets a fresh folder), then the scripts in tests/js
run on the same Node that runs the local S3 server.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from stack.servers import node_executable

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CLIENT_PACKAGE = "@fal-ai/client"
_MANIFESTS = ("package.json", "package-lock.json")


def _home() -> Path:
    digest = hashlib.sha256()
    for name in _MANIFESTS:
        digest.update((JS_DIR / name).read_bytes())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "portrait-queue"
    return base / f"js-client-{digest.hexdigest()[:12]}"


def _npm(node: Path) -> list[str]:
    # npm run by the same node (the wheel's npm wrapper would take whatever `node` PATH has).
    cli = node.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if cli.is_file():
        return [str(node), str(cli)]
    found = shutil.which("npm")
    if found is None:
        raise RuntimeError(f"no npm next to {node} nor on PATH to install {CLIENT_PACKAGE}")
    return [found]


def ensure_js_client(timeout: float = 300.0) -> Path:
    """The folder whose node_modules holds the pinned client (installed on first use)."""
    home = _home()
    marker = home / "node_modules" / "@fal-ai" / "client" / "package.json"
    if marker.is_file():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    node = node_executable()
    # Two test sessions may install at once on a fresh machine: one does, the other waits.
    with open(home.parent / f"{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return home
        staging = Path(tempfile.mkdtemp(prefix=f"{home.name}.", dir=home.parent))
        try:
            for name in _MANIFESTS:
                shutil.copy2(JS_DIR / name, staging / name)
            env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
            argv = _npm(node) + ["ci", "--ignore-scripts", "--no-audit", "--no-fund"]
            done = subprocess.run(argv, cwd=staging, env=env, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise RuntimeError(f"npm ci for {CLIENT_PACKAGE} failed:\n{done.stdout}{done.stderr}")
            shutil.rmtree(home, ignore_errors=True)  # an earlier install that lost its marker
            staging.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home


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
