"""Real child processes for end-to-end tests: the API under uvicorn and Celery workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A process in its own group, logging to a file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not log {needle!r}:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def start_api(env: dict[str, str], log_dir: Path, name: str = "api") -> tuple[Child, str]:
    port = free_port()
    child = Child(
        name,
        [
            str(BIN / "uvicorn"),
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env,
        log_dir,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            break
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return child, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"the API did not start:\n{child.log_text()[-4000:]}")


def start_worker(env: dict[str, str], log_dir: Path, name: str, queues: str, *options: str) -> Child:
    """A Celery worker; `options` go to `celery worker` (e.g. a thread pool for dispatchers)."""
    child = Child(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "worker.celery_app",
            "worker",
            "-n",
            f"{name}@%h",
            "-Q",
            queues,
            *options,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
        log_dir,
    )
    child.wait_for_log("ready.", timeout=90)
    return child
