"""Fault-injection harness: the service as real processes whose servers and workers a test can
kill and restart, plus the bookkeeping that proves no accepted request was lost or duplicated.

Each test module builds its own service (own database, queue names and bucket, and where it
restarts a server, its own server), so the session's servers stay untouched: the fault tests, and
tests/worker/test_batching.py for a worker with its own batch settings.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg

from stack.servers import LocalStack
from storage.layout import output_prefix
from tests.support.images import face_jpeg
from tests.support.processes import Child, start_api, start_worker

APP = "fal-ai/live-portrait/image"
QUEUE_BASE = "fal-ai/live-portrait"
# `make chaos` raises it: more requests and more faults per test.
SCALE = max(1, int(os.environ.get("CHAOS_SCALE", "1")))
_FACE_URI = "data:image/jpeg;base64," + base64.b64encode(face_jpeg()).decode()


def face_uri() -> str:
    return _FACE_URI


def fresh_database(url: str, name: str) -> str:
    """A new, migrated database on the same server. Each fault module's service gets its own:
    services sharing one database would see (and their reconcilers re-enqueue onto their own
    queues) each other's requests, as two deployments sharing a database would."""
    from sqlalchemy.engine import make_url

    from core.migrate import upgrade

    parts = make_url(url)
    with psycopg.connect(
        host=parts.host,
        port=parts.port,
        user=parts.username,
        password=parts.password,
        dbname=parts.database,
        autocommit=True,
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    fresh = parts.set(database=name).render_as_string(hide_password=False)
    upgrade(fresh)
    return fresh


def base_env(stack: LocalStack, weights: Path, **overrides: str) -> dict[str, str]:
    """Settings for one fault module's processes: short leases and fast reconciling, so that a
    fault is recovered from in seconds rather than the production minutes."""
    tag = uuid.uuid4().hex[:8]
    env = {
        **stack.env(),
        "DATABASE_URL": overrides.get("DATABASE_URL") or fresh_database(stack.database_url, f"pqfault_{tag}"),
        "S3_BUCKET": f"pq-fault-{tag}",
        "QUEUE_NAME": f"pqfault{tag}",
        "WEIGHTS_DIR": str(weights),
        "ENGINE_ARCH": "tiny",
        "DEVICE": "cpu",
        "TORCH_THREADS": "1",
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
        "RECONCILE_INTERVAL_S": "0.5",
        "REPUBLISH_AFTER_S": "3",
        "LEASE_S": "5",
        "AUTH_MODE": "off",
        "FAULT_STAGE_DELAY_S": "0.3",
        "PUBLIC_BASE_URL": "",
    }
    env.update(overrides)
    return env


def queues(env: dict[str, str]) -> str:
    return f"{env['QUEUE_NAME']}.normal,{env['QUEUE_NAME']}.low"


@dataclass
class Service:
    """API and worker processes of one test module; everything is stopped by close()."""

    env: dict[str, str]
    logs: Path
    children: dict[str, Child] = field(default_factory=dict)

    def api(self, name: str = "api", **overrides: str) -> str:
        child, base = start_api({**self.env, **overrides}, self.logs, name=name)
        self.children[name] = child
        return base

    def worker(self, name: str) -> Child:
        child = start_worker(self.env, self.logs, name, queues(self.env))
        self.children[name] = child
        return child

    def worker_holding(self, pid: int) -> str | None:
        """The name of the worker whose process group contains pid (a prefork pool child)."""
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return next((n for n, c in self.children.items() if c.proc.pid == group), None)

    def kill_group(self, name: str) -> None:
        """SIGKILL a whole worker (parent and pool): a machine that vanished."""
        child = self.children.pop(name)
        os.killpg(child.proc.pid, signal.SIGKILL)
        child.proc.wait(10)
        child.stop()

    def close(self) -> None:
        for child in self.children.values():
            child.stop()
        self.children.clear()


def submit(
    base: str, payload: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = payload if payload is not None else {"image_url": face_uri(), "smile": 0.5}
    return httpx.post(f"{base}/{APP}", json=body, headers=headers or {}, timeout=30)


def submit_many(base: str, count: int, headers: dict[str, str] | None = None) -> list[str]:
    ids = []
    for _ in range(count):
        response = submit(base, headers=headers)
        assert response.status_code == 200, response.text
        ids.append(response.json()["request_id"])
    return ids


def status(base: str, request_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{base}/{QUEUE_BASE}/requests/{request_id}/status", headers=headers or {}, timeout=10)


def result(base: str, request_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{base}/{QUEUE_BASE}/requests/{request_id}", headers=headers or {}, timeout=10)


def pg_url(env: dict[str, str]) -> str:
    return env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")


def rows(env: dict[str, str], ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The requests' rows, straight from PostgreSQL (the source of truth)."""
    with psycopg.connect(pg_url(env), connect_timeout=5) as conn:
        found = conn.execute(
            "SELECT id::text, status, attempts, error_type, output IS NOT NULL, worker"
            " FROM requests WHERE id = ANY(%s::uuid[])",
            (list(ids),),
        ).fetchall()
    keys = ("status", "attempts", "error_type", "has_output", "worker")
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in found}


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, psycopg.OperationalError):
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def running(env: dict[str, str], ids: Iterable[str], attempts: int = 1) -> list[tuple[str, int]]:
    """(request id, worker pid) of the listed requests running their `attempts`-th run."""
    out = []
    for rid, row in rows(env, ids).items():
        if row["status"] == "IN_PROGRESS" and row["attempts"] == attempts and row["worker"]:
            out.append((rid, int(row["worker"].rsplit(":", 1)[1])))
    return out


def wait_all_completed(env: dict[str, str], ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    def done() -> dict[str, dict[str, Any]] | None:
        found = rows(env, ids)
        finished = all(found.get(rid, {}).get("status") == "COMPLETED" for rid in ids)
        return found if finished else None

    return wait_for(done, timeout, f"{len(ids)} requests to complete", every=0.25)


def s3_client(env: dict[str, str]) -> Any:
    """A boto3 client of the service's S3 server, for looking at its bucket directly."""
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["S3_ACCESS_KEY"],
        aws_secret_access_key=env["S3_SECRET_KEY"],
        region_name=env["S3_REGION"],
    )


def output_objects(env: dict[str, str], request_id: str) -> int:
    s3 = s3_client(env)
    listing = s3.list_objects_v2(Bucket=env["S3_BUCKET"], Prefix=output_prefix(uuid.UUID(request_id)))
    return int(listing.get("KeyCount", 0))


@dataclass
class Ledger:
    """What a fault test accepted and what became of it; written for `make chaos`."""

    fault: str
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: list[float] = field(default_factory=list)

    def settle(
        self, env: dict[str, str], ids: list[str], expect_ok: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Count outcomes: lost = accepted but not COMPLETED (or gone); duplicated = more than one
        run stored a result (each run writes its own randomly named output object)."""
        found = rows(env, ids)
        self.submitted += len(ids)
        for rid in ids:
            row = found.get(rid)
            if row is None or row["status"] != "COMPLETED":
                self.lost += 1
                continue
            if row["error_type"] is None:
                self.completed += 1
            else:
                self.failed += 1
            if output_objects(env, rid) > 1:
                self.duplicated += 1
        self.report()
        if expect_ok:
            assert self.failed == 0, {rid: r for rid, r in found.items() if r["error_type"]}
        assert self.lost == 0 and self.duplicated == 0, self
        return found

    def report(self) -> None:
        target = os.environ.get("CHAOS_REPORT")
        if not target:
            return
        with open(target, "a") as out:
            out.write(json.dumps(self.__dict__) + "\n")
