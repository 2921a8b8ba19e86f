"""Servers as supervised child processes: spawn, wait until ready, stop; one recipe per server.

Each server module (postgres_server, redis_server, s3_server) describes its server as a
`ServerRecipe`: the command line for a port, the probe that says it is ready, the URL clients use,
its stop signal and log file. `start(recipe, port, timeout)` runs any of them the same way: on the
requested port (failing clearly when it is taken) or on a free one, retrying when another process
takes that port first, and returns the `RunningServer` once its probe holds.

Every child runs in its own process group (a terminal's Ctrl-C reaches only us, and we stop the
servers in order) and, on Linux, with PR_SET_PDEATHSIG, so the kernel sends it its stop signal if
the Python process dies, even by SIGKILL. Limits of that guard: it fires when the *thread* that
started the child exits, so start servers from a thread that lives as long as they should; and on
other systems there is no such guard (stop them with `kill -- -PGID`, the pid that `RunningServer`
reports).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from stack.ports import LOOPBACK, PortInUseError, ensure_port_free, free_port

_log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 15.0


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
class RunAs:
    """The unprivileged account a server runs as when we are root."""

    uid: int
    gid: int
    name: str


@dataclass
class RunningServer:
    """One server started by this package: its process, where it listens and where it logs."""

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
    run_as: RunAs | None = None,
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


def package_dir(module: str) -> Path:
    """Where an installed package lives, found without importing it (importing has side effects)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ServerSetupError(
            f"the Python package {module!r} is not installed; install the project's local servers "
            "with: pip install -e '.[local]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ServerRecipe(Generic[_S]):
    """How to run one server: everything `start` needs besides the port.

    server_type is the RunningServer class to build and extras its fields beyond RunningServer's
    (a database's user, an S3 server's keys), so that ready and after_ready can use them. The
    server's working directory is data_dir.
    """

    name: str
    server_type: type[_S]
    argv: Callable[[int], list[str]]  # the command line for a port
    ready: Callable[[_S], bool]  # polled until True; may raise ServerStartError to give up at once
    url: Callable[[int], str]  # what clients connect to, for a port
    stop_signal: signal.Signals
    data_dir: Path
    log_path: Path
    env: Mapping[str, str] | None = None  # None: ours
    run_as: RunAs | None = None
    after_ready: Callable[[_S], None] | None = None  # one-off setup once it answers
    extras: Mapping[str, Any] = field(default_factory=dict)


def start(recipe: ServerRecipe[_S], port: int | None, timeout: float = DEFAULT_START_TIMEOUT_S) -> _S:
    """Run recipe's server on port (None: a free one) and return it once it is ready.

    A server that exits, does not answer within timeout or fails after_ready is stopped before
    the error propagates, so a failed start leaves no process behind.
    """

    def attempt(chosen: int) -> _S:
        started = time.monotonic()
        process, offset = _spawn(
            recipe.name,
            recipe.argv(chosen),
            log_path=recipe.log_path,
            stop_signal=recipe.stop_signal,
            cwd=recipe.data_dir,
            env=recipe.env,
            run_as=recipe.run_as,
        )
        server = recipe.server_type(
            name=recipe.name,
            process=process,
            port=chosen,
            url=recipe.url(chosen),
            data_dir=recipe.data_dir,
            log_path=recipe.log_path,
            stop_signal=recipe.stop_signal,
            log_offset=offset,
            **recipe.extras,
        )
        try:
            _wait_ready(server, lambda: recipe.ready(server), timeout, started)
            if recipe.after_ready is not None:
                recipe.after_ready(server)
        except BaseException:
            server.stop()
            raise
        return server

    return _start_on_port(recipe.name, port, attempt)
