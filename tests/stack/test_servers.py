"""stack.servers against the real servers: data round trips, restarts, failures, no orphans."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
import psycopg
import pytest
import redis
from botocore.config import Config

from stack.ports import LOOPBACK, port_accepts
from stack.postgres_server import start_postgres
from stack.process import RunningServer, ServerStartError, _spawn
from stack.redis_server import start_redis
from stack.servers import LocalStack

BUCKET = "portrait-stack-test"
PART = 5 * 1024 * 1024 + 1024  # S3 wants every part but the last to be at least 5 MiB


def _s3(stack: LocalStack) -> Any:  # boto3 builds its client classes at run time
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint_url,
        aws_access_key_id=stack.s3_access_key,
        aws_secret_access_key=stack.s3_secret_key,
        region_name=stack.s3_region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def _psycopg_conninfo(stack: LocalStack) -> str:
    # psycopg takes the libpq URL, without SQLAlchemy's "+driver" part.
    return stack.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _process_tree(pids: list[int]) -> list[psutil.Process]:
    """The servers and everything below them (PostgreSQL's backends are their own groups)."""
    tree: list[psutil.Process] = []
    for pid in pids:
        proc = psutil.Process(pid)
        tree += [proc, *proc.children(recursive=True)]
    return tree


def _alive(proc: psutil.Process) -> bool:
    # A zombie has exited; when it is reparented to a PID 1 that does not reap, it lingers as one.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in procs if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in procs if _alive(p)]


def test_session_fixture_serves_all_three(local_stack: LocalStack) -> None:
    with psycopg.connect(_psycopg_conninfo(local_stack)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("portrait",)
    assert redis.Redis.from_url(local_stack.redis_url).ping()
    assert "Buckets" in _s3(local_stack).list_buckets()
    # None of the machine's own servers: they sit on the well-known ports.
    ports = {s.port for s in local_stack.servers}
    assert not ports & {5432, 6379, 5672}
    assert all(s.host == LOOPBACK for s in local_stack.servers)
    assert f"@{LOOPBACK}:" in local_stack.database_url


def test_data_survives_restart_and_stop_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    big = os.urandom(PART) + os.urandom(PART) + b"tail"

    with LocalStack(data_dir, persistent=True) as stack:
        with psycopg.connect(_psycopg_conninfo(stack)) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")

        r = redis.Redis.from_url(stack.redis_url)
        r.set("greeting", "hello")
        r.close()

        s3 = _s3(stack)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="a/plain.txt", Body=b"plain", ContentType="text/plain")
        head = s3.head_object(Bucket=BUCKET, Key="a/plain.txt")
        assert head["ContentLength"] == 5
        assert head["ContentType"] == "text/plain"

        get_url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": "a/plain.txt"}, ExpiresIn=300
        )
        got = httpx.get(get_url)
        assert (got.status_code, got.content) == (200, b"plain")
        # The server checks SigV4 signatures: a tampered URL must not work.
        assert httpx.get(get_url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403

        put_url = s3.generate_presigned_url(
            "put_object", Params={"Bucket": BUCKET, "Key": "uploaded.bin"}, ExpiresIn=300
        )
        assert httpx.put(put_url, content=b"via presigned put").status_code == 200
        assert s3.get_object(Bucket=BUCKET, Key="uploaded.bin")["Body"].read() == b"via presigned put"

        upload = s3.create_multipart_upload(Bucket=BUCKET, Key="big.bin")
        parts = []
        for number, start in enumerate(range(0, len(big), PART), start=1):
            etag = s3.upload_part(
                Bucket=BUCKET,
                Key="big.bin",
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=big[start : start + PART],
            )["ETag"]
            parts.append({"ETag": etag, "PartNumber": number})
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="big.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )
        assert s3.get_object(Bucket=BUCKET, Key="big.bin")["Body"].read() == big

        s3.put_object(Bucket=BUCKET, Key="doomed.txt", Body=b"x")
        s3.delete_object(Bucket=BUCKET, Key="doomed.txt")
        with pytest.raises(s3.exceptions.ClientError):
            s3.head_object(Bucket=BUCKET, Key="doomed.txt")

        tree = _process_tree([s.pid for s in stack.servers])
        ports = [s.port for s in stack.servers]
        assert len(tree) > 3  # PostgreSQL's own children are in the tree too

    # stop() returned: every server and every process under it is gone, and the ports are free.
    assert _wait_gone(tree, timeout=5) == []
    assert not any(port_accepts(port) for port in ports)

    with LocalStack(data_dir, persistent=True) as again:
        with psycopg.connect(_psycopg_conninfo(again)) as conn:
            assert conn.execute("SELECT id, name FROM items ORDER BY id").fetchall() == [
                (1, "one"),
                (2, "two"),
            ]
        r = redis.Redis.from_url(again.redis_url)
        assert r.get("greeting") == b"hello"
        r.close()
        s3 = _s3(again)
        assert s3.get_object(Bucket=BUCKET, Key="a/plain.txt")["Body"].read() == b"plain"
        assert s3.get_object(Bucket=BUCKET, Key="uploaded.bin")["Body"].read() == b"via presigned put"
        assert s3.get_object(Bucket=BUCKET, Key="big.bin")["Body"].read() == big
        tree = _process_tree([s.pid for s in again.servers])
    assert _wait_gone(tree, timeout=5) == []


def test_requested_port_that_is_taken_fails_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"port {port} on {LOOPBACK} is already in use"):
            start_redis(tmp_path / "redis", port)


def test_server_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "postgres"
    start_postgres(data_dir, persistent=False).stop()
    # A cluster from a "future" major version: postgres refuses it and exits at once.
    (data_dir / "pgdata" / "PG_VERSION").write_text("99\n")
    with pytest.raises(ServerStartError) as failure:
        start_postgres(data_dir, persistent=False)
    assert "exited with code" in str(failure.value)
    assert "incompatible" in failure.value.log_tail


def test_stop_kills_the_process_group_of_a_server_that_ignores_its_signal(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    # A "server" that ignores SIGTERM, with a child in its process group that ignores it too.
    argv = ["sh", "-c", 'trap "" TERM; sleep 60 & echo ready; wait']
    process, offset = _spawn("stubborn", argv, log_path=log, stop_signal=signal.SIGTERM, cwd=tmp_path)
    server = RunningServer("stubborn", process, 0, "", tmp_path, log, signal.SIGTERM, offset)
    deadline = time.monotonic() + 10
    # A line of its own: the log's first line (the command) contains the word as well.
    while "ready" not in server.log_tail().splitlines()[1:] and time.monotonic() < deadline:
        time.sleep(0.02)
    tree = _process_tree([server.pid])
    assert len(tree) == 2
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert process.returncode == -signal.SIGKILL
    assert _wait_gone(tree, timeout=5) == []


def _read_env_lines(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
    """KEY=value lines from `python -m stack.servers` until S3_REGION, the last one it prints.

    Reads the pipe's file descriptor directly: a buffered readline could swallow lines that select()
    then never reports as readable.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\nS3_REGION=" not in b"\n" + buffer or not buffer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"no settings from stack.servers within {timeout}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stack.servers exited with {proc.wait()}")
            buffer += chunk
    lines = buffer.decode().splitlines()
    return dict(line.partition("=")[::2] for line in lines if "=" in line)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_command_line_stops_servers_even_when_killed(tmp_path: Path, how: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack.servers", "--data-dir", str(tmp_path / "cli"), "--ephemeral"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        env = _read_env_lines(proc, timeout=60)
        assert set(env) >= {
            "DATABASE_URL",
            "REDIS_URL",
            "S3_ENDPOINT_URL",
            "S3_ACCESS_KEY_ID",
            "S3_SECRET_ACCESS_KEY",
            "S3_REGION",
        }
        assert redis.Redis.from_url(env["REDIS_URL"]).ping()
        servers = psutil.Process(proc.pid).children(recursive=True)
        assert len(servers) > 3
        # SIGTERM: the command stops its servers itself. SIGKILL: it cannot, and the kernel's
        # parent-death signal has to stop them.
        proc.send_signal(signal.Signals[how])
        code = proc.wait(timeout=30)
        assert code == (0 if how == "SIGTERM" else -signal.SIGKILL)
        assert _wait_gone(servers, timeout=15) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
