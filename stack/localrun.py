"""`make run`: the whole service on one machine, in the foreground, without Docker.

Starts PostgreSQL, Redis and an S3 server under LOCAL_DATA_DIR (./var; data survives restarts),
migrates the database, then runs the API, one worker and a webhook dispatcher as child processes
until Ctrl-C. When DATABASE_URL, REDIS_URL or S3_ENDPOINT_URL is set, those servers are used
instead and none is started. Missing weights are fetched when the hub answers; without them the
service still runs and fails requests with "model weights not installed".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings, get_settings
from core.migrate import upgrade
from queueing.queues import all_queues, webhook_queue

if TYPE_CHECKING:
    from stack.servers import LocalStack

EXTERNAL_SERVER_VARS = ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL")
STOP_TIMEOUT_S = 40.0


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def say_auth_mode(settings: Settings) -> None:
    if settings.auth_mode == "off":
        say("auth: off (AUTH_MODE=off): no key needed, every caller sees every request")
        return
    say("auth: keys (AUTH_MODE=keys): send `Authorization: Key <key_id>:<secret>`; create a key with")
    say(f"      DATABASE_URL='{settings.database_url}' {sys.executable} -m api.keys create NAME")
    say("      (AUTH_MODE=off in .env turns auth off for a single local user)")


def ensure_weights(settings: Settings) -> None:
    """The engine's own command decides (worker.liveportrait.download --if-missing): this
    supervisor starts the worker process and imports nothing of it."""
    if settings.engine_arch != "full":
        return
    command = [sys.executable, "-m", "worker.liveportrait.download", "--if-missing"]
    subprocess.run([*command, "--dest", str(settings.weights_dir)], check=False)


def celery_worker(queues: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues, *options,
            "--loglevel", "INFO"]  # fmt: skip


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own process group: Ctrl-C reaches only this runner, which then stops children in order.
    return subprocess.Popen(argv, env=env, start_new_session=True)


class StopFlag:
    """Set from a signal handler. A threading.Event would deadlock there: the handler runs in the
    main thread, possibly while that thread already holds the Event's internal lock in wait()."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self._set and time.monotonic() < end:
            time.sleep(0.05)
        return self._set


def stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def wait_healthy(url: str, children: list[subprocess.Popen[bytes]], stop: StopFlag) -> bool:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stop.is_set():
        if any(child.poll() is not None for child in children):
            say("a child process exited during startup; stopping")
            return False
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    if not stop.is_set():
        say("the API did not answer within 120 s; stopping")
    return False


def start_local_stack(data_dir: Path) -> LocalStack:
    """Start the servers on the ports they had last time, so that result URLs handed out before a
    restart (they name the S3 port) keep working; fresh free ports on the first run, or when one
    of the old ports has been taken meanwhile."""
    # Imported here: with external servers (DATABASE_URL, ...) nothing of the local stack loads.
    from stack.servers import LocalStack

    ports_file = data_dir / "ports.json"
    ports: dict[str, int] = {}
    if ports_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            ports = {k: int(v) for k, v in json.loads(ports_file.read_text()).items()}
    stack = LocalStack(
        data_dir,
        persistent=True,
        postgres_port=ports.get("postgres"),
        redis_port=ports.get("redis"),
        s3_port=ports.get("s3"),
    )
    try:
        stack.start()
    except Exception as exc:
        if not ports:
            raise
        say(f"servers: the previous ports are not available ({exc}); using new ones")
        stack = LocalStack(data_dir, persistent=True)
        stack.start()
    assert stack.postgres and stack.redis and stack.s3
    data_dir.mkdir(parents=True, exist_ok=True)
    used = {"postgres": stack.postgres.port, "redis": stack.redis.port, "s3": stack.s3.port}
    ports_file.write_text(json.dumps(used))
    return stack


def main() -> int:
    settings = get_settings()
    stop = StopFlag()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    ensure_weights(settings)
    env = dict(os.environ)
    with ExitStack() as cleanup:
        if any(os.environ.get(name) for name in EXTERNAL_SERVER_VARS):
            say("servers: using DATABASE_URL, REDIS_URL and S3_ENDPOINT_URL from the environment")
        else:
            data_dir = settings.local_data_dir.resolve() / "stack"
            say(f"servers: starting PostgreSQL, Redis and S3 under {data_dir}")
            stack = start_local_stack(data_dir)
            cleanup.callback(stack.stop)
            env.update(stack.env())
        os.environ.update(env)
        get_settings.cache_clear()
        settings = get_settings()

        say("database: migrating")
        upgrade(settings.database_url)

        children: list[subprocess.Popen[bytes]] = []
        cleanup.callback(stop_all, children)
        children.append(
            spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.main:app",
                    "--host",
                    settings.host,
                    "--port",
                    str(settings.port),
                    "--proxy-headers",
                ],
                env,
            )
        )
        children.append(spawn(celery_worker(",".join(all_queues(settings))), env))
        # The webhook dispatcher: its own small thread-pool worker, so a slow receiver never
        # holds the GPU worker above.
        dispatcher = ["-P", "threads", "--concurrency", "4", "-n", "webhooks@%h"]
        children.append(spawn(celery_worker(webhook_queue(settings), *dispatcher), env))
        local_url = f"http://{settings.host}:{settings.port}"
        if not wait_healthy(local_url, children, stop):
            return 0 if stop.is_set() else 1
        url = settings.public_base_url or local_url
        say(f"ready: {url}  (API docs: {url}/docs; Ctrl-C stops everything)")
        say_auth_mode(settings)
        while not stop.wait(0.5):
            exited = [child for child in children if child.poll() is not None]
            if exited:
                say(f"a child process exited (code {exited[0].returncode}); stopping")
                return 1
        say("stopping")
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
