"""Node packages pinned by a committed package-lock.json, installed once with `npm ci` into a user
cache folder named after the lock's hash.

Outside the work tree (no stray node_modules for git or ruff), shared by every checkout, and a
changed lock file gets a fresh folder instead of a half-upgraded one. Needs the npm registry on
first use only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MANIFESTS = ("package.json", "package-lock.json")


class NpmInstallError(RuntimeError):
    pass


def cache_root() -> Path:
    override = os.environ.get("STACK_CACHE_DIR")
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "portrait-queue"


def pinned_home(source: Path, prefix: str) -> Path:
    digest = hashlib.sha256()
    for name in MANIFESTS:
        digest.update((source / name).read_bytes())
    return cache_root() / f"{prefix}-{digest.hexdigest()[:12]}"


def npm_command(node: Path) -> list[str]:
    """npm run by the same node (the wheel's npm script would pick whatever `node` PATH has)."""
    npm_cli = node.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if npm_cli.is_file():
        return [str(node), str(npm_cli)]
    found = shutil.which("npm")
    if found is None:
        raise NpmInstallError(f"no npm next to {node} nor on PATH")
    return [found]


def install_pinned(
    source: Path, prefix: str, package: str, *, node: Path, omit_dev: bool = True, timeout: float = 300.0
) -> Path:
    """The folder whose node_modules holds `package` as `source`'s lock file pins it."""
    home = pinned_home(source, prefix)
    marker = home / "node_modules" / package / "package.json"
    if marker.is_file():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    # A file lock: `make run` and a test session may both get here first on a fresh machine.
    with open(home.parent / f"{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return home
        staging = Path(tempfile.mkdtemp(prefix=f"{home.name}.", dir=home.parent))
        try:
            for name in MANIFESTS:
                shutil.copy2(source / name, staging / name)
            env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
            argv = [*npm_command(node), "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
            if omit_dev:
                argv.append("--omit=dev")
            try:
                done = subprocess.run(
                    argv, cwd=staging, env=env, capture_output=True, text=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise NpmInstallError(f"npm ci for {package} took over {timeout:.0f}s") from exc
            if done.returncode != 0:
                output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
                raise NpmInstallError(f"npm ci for {package} failed:\n{output}")
            shutil.rmtree(home, ignore_errors=True)  # an earlier install that lost its marker
            staging.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home
