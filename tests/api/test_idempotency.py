"""Idempotency-Key on submit and /run/, over real HTTP: a repeat is the first request's answer
(Idempotent-Replayed: true), with no second row and no second broker message; another body is a
422; concurrent repeats on two API replicas make one request; entries expire and are swept.

The two replicas here run in keys mode and publish to queues no worker consumes, so their
messages can be counted and their requests stay queued; the /run/ result test uses the
session's API and workers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from core import idempotency
from core.clock import utcnow
from core.config import get_settings
from core.db import session_scope
from storage.layout import INPUTS
from storage.result_sweep import delete_idempotency_keys_once, drain
from tests.support.client_helpers import APP, QUEUE_BASE
from tests.support.harness import face_uri, pg_url, s3_client
from tests.support.image_server import ImageServer
from tests.support.keyed_api import new_key
from tests.support.processes import Child, start_api

PAYLOAD = {"image_url": "http://127.0.0.1:9/never-fetched.png", "smile": 0.5}
# fal's +json content type: FastAPI parses it, the fast path (application/json only) does not.
FASTAPI_JSON = "application/vnd.fal+json"
SYNC_RUN_TIMEOUT_S = 4
REPLAYED = "idempotent-replayed"


@pytest.fixture(scope="module")
def replicas(migrated: dict[str, str], logs_dir: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    env = {
        **migrated,
        "AUTH_MODE": "keys",
        "QUEUE_NAME": migrated["QUEUE_NAME"] + "idem",
        "RECONCILE_INTERVAL_S": "0",
        "RETENTION_SWEEP_INTERVAL_S": "0",
        "SYNC_RUN_TIMEOUT_S": str(SYNC_RUN_TIMEOUT_S),
    }
    children: list[Child] = []
    bases: list[str] = []
    try:
        for name in ("idem-api-1", "idem-api-2"):
            child, base = start_api(env, logs_dir, name=name)
            children.append(child)
            bases.append(base)
        yield env, bases
    finally:
        for child in children:
            child.stop()


def _auth(name: str) -> tuple[dict[str, str], str]:
    key = new_key(name)
    return {"Authorization": f"Key {key}"}, key.split(":", 1)[0]


def _post(
    base: str,
    auth: dict[str, str],
    key: str | None,
    body: dict[str, Any] | None = None,
    *,
    path: str = APP,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> httpx.Response:
    sent = {**auth, "content-type": content_type, **(headers or {})}
    if key is not None:
        sent["Idempotency-Key"] = key
    content = json.dumps(PAYLOAD if body is None else body).encode()
    return httpx.post(f"{base}/{path}", content=content, headers=sent, timeout=timeout)


def _sql(statement: str, **params: Any) -> list[Any]:
    with session_scope() as session:
        result = session.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


def _rows_of(key_id: str) -> list[Any]:
    return _sql(
        "SELECT id::text, status, attempts, priority, error_type FROM requests WHERE owner_key_id = :k",
        k=key_id,
    )


def _entry(owner: str, key: str) -> Any:
    found = _sql(
        "SELECT request_id::text, created_at, expires_at FROM idempotency_keys WHERE owner = :o AND key = :k",
        o=owner,
        k=key,
    )
    return found[0] if found else None


def _messages(env: dict[str, str]) -> int:
    broker = redis.Redis.from_url(env["REDIS_URL"])
    return int(broker.llen(f"{env['QUEUE_NAME']}.normal") + broker.llen(f"{env['QUEUE_NAME']}.low"))


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _cancel(base: str, auth: dict[str, str], ids: list[str]) -> None:
    for request_id in ids:
        httpx.put(f"{base}/{QUEUE_BASE}/requests/{request_id}/cancel", headers=auth, timeout=30)


def _same_request(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == 200, again.text
    a, b = first.json(), again.json()
    for field in ("request_id", "gateway_request_id"):
        assert a[field] == b[field], field
    # The URLs are the same request's, on the host this call reached (replicas differ here only
    # by port; behind one load balancer they are identical).
    for field in ("status_url", "response_url", "cancel_url"):
        assert urlsplit(a[field]).path == urlsplit(b[field]).path, field
    assert again.headers["x-fal-request-id"] == a["request_id"]
    assert again.headers.get(REPLAYED) == "true"
    assert b["status"] == "IN_QUEUE" and isinstance(b["queue_position"], int)


def test_a_repeat_is_the_first_request_on_both_paths_and_replicas(
    replicas: tuple[dict[str, str], list[str]],
) -> None:
    env, (one, two) = replicas
    auth, key_id = _auth("idem-repeat")
    messages = _messages(env)
    made: list[str] = []
    # (first call's content type, the repeat's): the fast path and FastAPI's route agree.
    for first_type, repeat_type in (
        ("application/json", "application/json"),
        (FASTAPI_JSON, FASTAPI_JSON),
        ("application/json", FASTAPI_JSON),
    ):
        key = f"repeat-{uuid.uuid4()}"
        first = _post(one, auth, key, content_type=first_type)
        assert first.status_code == 200, first.text
        assert REPLAYED not in first.headers
        made.append(first.json()["request_id"])
        # The same body with its keys in another order and a default spelled out; on the other
        # replica; with other options (the first submit's hold).
        reordered = {"smile": 0.5, "blink": 0, "image_url": PAYLOAD["image_url"]}
        for base, body, headers in (
            (one, PAYLOAD, {}),
            (two, reordered, {"x-fal-queue-priority": "low"}),
            (two, PAYLOAD, {}),
        ):
            again = _post(base, auth, key, body, content_type=repeat_type, headers=headers)
            _same_request(first, again)
        # The draft's quoted string form names the same key.
        _same_request(first, _post(two, auth, f'"{key}"'))
    rows = _rows_of(key_id)
    assert sorted(r[0] for r in rows) == sorted(made), "one row per key"
    assert {r[3] for r in rows} == {0}, "the replays' low priority changed nothing"
    _wait(lambda: _messages(env) == messages + len(made), 10, "one message per request")
    time.sleep(0.5)
    assert _messages(env) == messages + len(made), "a replay publishes nothing"
    _cancel(one, auth, made)


def test_another_body_or_endpoint_with_the_key_is_422(replicas: tuple[dict[str, str], list[str]]) -> None:
    env, (one, two) = replicas
    auth, key_id = _auth("idem-conflict")
    key = "conflict-key"
    first = _post(one, auth, key)
    assert first.status_code == 200
    other_bodies = [
        (APP, {**PAYLOAD, "smile": 0.6}, "application/json"),
        (APP, {**PAYLOAD, "smile": 0.6}, FASTAPI_JSON),
        (f"run/{APP}", PAYLOAD, "application/json"),  # the same body, but synchronously
    ]
    for path, body, content_type in other_bodies:
        refused = _post(two, auth, key, body, path=path, content_type=content_type)
        assert refused.status_code == 422, refused.text
        (detail,) = refused.json()["detail"]
        assert detail["loc"] == ["header", "idempotency-key"]
        assert detail["type"] == "idempotency_key_reused"
        assert "already used with a different request body" in detail["msg"]
        assert detail["input"] == key
        assert refused.headers["x-fal-error-type"] == "idempotency_key_reused"
        assert REPLAYED not in refused.headers
    assert [r[0] for r in _rows_of(key_id)] == [first.json()["request_id"]]
    _cancel(one, auth, [first.json()["request_id"]])


def test_key_length_and_form(replicas: tuple[dict[str, str], list[str]]) -> None:
    _, (one, _) = replicas
    auth, key_id = _auth("idem-length")
    longest = "k" * 255
    for content_type in ("application/json", FASTAPI_JSON):
        for bad in ("k" * 256, f'"{"k" * 256}"', '""', ""):
            refused = _post(one, auth, bad, content_type=content_type)
            assert refused.status_code == 422, (bad[:10], refused.text)
            (detail,) = refused.json()["detail"]
            assert detail["loc"] == ["header", "idempotency-key"]
    first = _post(one, auth, longest)
    assert first.status_code == 200 and REPLAYED not in first.headers
    # Quoted, the 255 characters are still the key itself.
    _same_request(first, _post(one, auth, f'"{longest}"', content_type=FASTAPI_JSON))
    assert len(_rows_of(key_id)) == 1
    _cancel(one, auth, [first.json()["request_id"]])


def test_each_api_key_has_its_own_keys(replicas: tuple[dict[str, str], list[str]]) -> None:
    _, (one, two) = replicas
    (alice, alice_id), (bob, bob_id) = _auth("idem-alice"), _auth("idem-bob")
    key = "shared-idempotency-key"
    a = _post(one, alice, key)
    b = _post(two, bob, key)
    assert a.status_code == b.status_code == 200
    assert REPLAYED not in b.headers and a.json()["request_id"] != b.json()["request_id"]
    _same_request(a, _post(two, alice, key))
    _same_request(b, _post(one, bob, key))
    # Each key's request is its own: the other's status is a 404.
    status_url = f"{one}/{QUEUE_BASE}/requests/{a.json()['request_id']}/status"
    assert httpx.get(status_url, headers=bob, timeout=10).status_code == 404
    assert len(_rows_of(alice_id)) == len(_rows_of(bob_id)) == 1
    _cancel(one, alice, [a.json()["request_id"]])
    _cancel(one, bob, [b.json()["request_id"]])


def _raw_post(base: str, path: str, headers: dict[str, str], body: bytes) -> socket.socket:
    """Send a request on a raw socket and return it unread, for the test to close."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    lines = [f"POST /{path} HTTP/1.1", f"Host: {url.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


@pytest.mark.parametrize("content_type", ["application/json", FASTAPI_JSON])
def test_a_connection_killed_after_the_commit_then_a_retry(
    replicas: tuple[dict[str, str], list[str]], content_type: str
) -> None:
    env, (one, two) = replicas
    auth, key_id = _auth("idem-killed")
    key = f"killed-{uuid.uuid4()}"
    messages = _messages(env)
    body = json.dumps({"image_url": face_uri()}).encode()  # stored in the bucket at submit
    sock = _raw_post(one, APP, {**auth, "Content-Type": content_type, "Idempotency-Key": key}, body)
    # The server committed (its entry names the row); the answer is never read.
    entry = _wait(lambda: _entry(key_id, key), 10, "the submit's commit")
    sock.close()
    retry = _post(two, auth, key, {"image_url": face_uri()}, content_type=content_type)
    assert retry.status_code == 200 and retry.headers[REPLAYED] == "true"
    assert retry.json()["request_id"] == entry[0]
    assert [r[0] for r in _rows_of(key_id)] == [entry[0]]
    _wait(lambda: _messages(env) == messages + 1, 10, "the one message")
    _cancel(one, auth, [entry[0]])


def _inputs_stored(env: dict[str, str]) -> int:
    s3 = s3_client(env)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=env["S3_BUCKET"], Prefix=INPUTS)
    return sum(int(page.get("KeyCount", 0)) for page in pages)


@pytest.mark.parametrize("large", [False, True], ids=["small-body", "data-uri-to-bucket"])
def test_twenty_concurrent_submits_make_one_request(
    replicas: tuple[dict[str, str], list[str]], large: bool
) -> None:
    env, bases = replicas
    auth, key_id = _auth("idem-bar")
    key = f"bar-{uuid.uuid4()}"
    body = {"image_url": face_uri()} if large else PAYLOAD
    messages, stored = _messages(env), _inputs_stored(env)
    count = 20
    barrier = threading.Barrier(count)
    answers: list[httpx.Response | None] = [None] * count

    def one_submit(i: int) -> None:
        # Spread over both replicas and both submit paths.
        content_type = "application/json" if i % 4 < 2 else FASTAPI_JSON
        with httpx.Client(timeout=60) as client:
            client.get(f"{bases[i % 2]}/healthz")  # connected before the start line
            barrier.wait()
            answers[i] = client.post(
                f"{bases[i % 2]}/{APP}",
                content=json.dumps(body).encode(),
                headers={**auth, "content-type": content_type, "Idempotency-Key": key},
            )

    threads = [threading.Thread(target=one_submit, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert all(a is not None and a.status_code == 200 for a in answers), [
        a.text if a is not None else None for a in answers
    ]
    got = [a for a in answers if a is not None]
    assert len({a.json()["request_id"] for a in got}) == 1
    assert sum(a.headers.get(REPLAYED) == "true" for a in got) == count - 1
    rows = _rows_of(key_id)
    assert len(rows) == 1 and rows[0][0] == got[0].json()["request_id"]
    _wait(lambda: _messages(env) == messages + 1, 10, "the one message")
    time.sleep(0.5)
    assert _messages(env) == messages + 1
    # A submit that lost the race deleted the input it had stored; replays stored none.
    assert _inputs_stored(env) == stored + (1 if large else 0)
    _cancel(bases[0], auth, [rows[0][0]])


def test_an_expired_or_orphaned_key_makes_a_new_request_and_the_sweep_deletes_it(
    replicas: tuple[dict[str, str], list[str]],
) -> None:
    _, (one, two) = replicas
    auth, key_id = _auth("idem-expiry")
    key = "expiring-key"
    first = _post(one, auth, key)
    entry = _entry(key_id, key)
    assert entry[2] - entry[1] == timedelta(seconds=get_settings().idempotency_ttl_s)
    # Past its expiry the key is free again, even for another body: it takes the entry over.
    _sql("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE owner = :o", o=key_id)
    second = _post(two, auth, key, {**PAYLOAD, "smile": 0.7})
    assert second.status_code == 200 and REPLAYED not in second.headers
    assert second.json()["request_id"] != first.json()["request_id"]
    assert _entry(key_id, key)[0] == second.json()["request_id"]
    _same_request(second, _post(one, auth, key, {**PAYLOAD, "smile": 0.7}))
    # A request deleted by row retention takes its entry with it.
    _sql("DELETE FROM requests WHERE id = CAST(:i AS uuid)", i=second.json()["request_id"])
    assert _entry(key_id, key) is None
    third = _post(one, auth, key)
    assert third.status_code == 200 and REPLAYED not in third.headers
    ids = [first.json()["request_id"], third.json()["request_id"]]
    assert sorted(r[0] for r in _rows_of(key_id)) == sorted(ids)

    # The sweep: expired entries go (in batches), live ones stay, their requests stay.
    for n in range(5):
        assert _post(one, auth, f"sweep-{n}").status_code == 200
    _sql(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 hour'"
        " WHERE owner = :o AND key LIKE 'sweep-%'",
        o=key_id,
    )
    settings = get_settings().model_copy(update={"sweep_batch_size": 2})
    assert drain(lambda: delete_idempotency_keys_once(settings), settings) >= 5
    assert [r[0] for r in _sql("SELECT key FROM idempotency_keys WHERE owner = :o", o=key_id)] == [key]
    assert len(_rows_of(key_id)) == 7
    _cancel(one, auth, [r[0] for r in _rows_of(key_id)])


def _run_in_background(base: str, headers: dict[str, str]) -> socket.socket:
    return _raw_post(
        base, f"run/{APP}", {"Content-Type": "application/json", **headers}, json.dumps(PAYLOAD).encode()
    )


def test_run_with_a_key_survives_disconnect_and_timeout(replicas: tuple[dict[str, str], list[str]]) -> None:
    _, (one, two) = replicas
    auth, key_id = _auth("idem-run")
    # Without a key a caller that goes away cancels its request (well before the timeout).
    plain = _run_in_background(one, auth)
    row = _wait(lambda: _rows_of(key_id), 10, "the keyless run's row")[0]
    plain.close()
    _wait(lambda: _rows_of(key_id)[0][4] == "client_cancelled", SYNC_RUN_TIMEOUT_S - 1, "its cancel")

    # With a key it keeps running; the retry attaches to it.
    key = f"run-{uuid.uuid4()}"
    keyed = _run_in_background(one, {**auth, "Idempotency-Key": key})
    entry = _wait(lambda: _entry(key_id, key), 10, "the keyed run's commit")
    keyed.close()
    time.sleep(2)
    assert {r[0]: r[1] for r in _rows_of(key_id)}[entry[0]] == "IN_QUEUE"
    # The server's own timeout does not cancel it either: the 504 names it, and a retry waits again.
    started = time.monotonic()
    retry = _post(two, auth, key, path=f"run/{APP}", timeout=SYNC_RUN_TIMEOUT_S + 20)
    assert retry.status_code == 504 and retry.json()["error_type"] == "request_timeout"
    assert time.monotonic() - started >= SYNC_RUN_TIMEOUT_S - 0.5
    assert retry.headers["x-fal-request-id"] == entry[0] and retry.headers[REPLAYED] == "true"
    assert {r[0]: r[1] for r in _rows_of(key_id)}[entry[0]] == "IN_QUEUE"
    assert len(_rows_of(key_id)) == 2 and row[0] != entry[0]
    _cancel(one, auth, [entry[0]])


def test_run_replay_answers_with_the_result(
    api: str, workers: list[Child], image_server: ImageServer
) -> None:
    # The session's API runs with AUTH_MODE=off: the entries' owner is the anonymous one.
    key = f"run-result-{uuid.uuid4()}"
    body = {"image_url": image_server.url("face.jpg"), "smile": 0.4}
    first = _post(api, {}, key, body, path=f"run/{APP}", timeout=180)
    assert first.status_code == 200, first.text
    assert REPLAYED not in first.headers
    request_id = first.headers["x-fal-request-id"]
    assert _entry(idempotency.ANONYMOUS_OWNER, key)[0] == request_id
    again = _post(api, {}, key, body, path=f"run/{APP}", content_type=FASTAPI_JSON, timeout=60)
    assert again.status_code == 200 and again.headers[REPLAYED] == "true"
    assert again.json() == first.json() and again.headers["x-fal-request-id"] == request_id
    ((status, attempts),) = _sql(
        "SELECT status, attempts FROM requests WHERE id = CAST(:i AS uuid)", i=request_id
    )
    assert (status, attempts) == ("COMPLETED", 1), "the worker ran it once"
    # The queue endpoint with the same key and body is another request: refused.
    assert _post(api, {}, key, body).status_code == 422


def test_the_key_statements_read_no_more_than_they_need(migrated: dict[str, str]) -> None:
    """The lookup and the sweep's batch behind 20,000 live entries (and their requests)."""
    live, expired, batch = 20_000, 30, 10
    delete = idempotency._DELETE_EXPIRED.compile(dialect=asyncpg_dialect.dialect())

    def rows_read(plan: dict[str, Any]) -> int:
        read = 0
        if plan.get("Relation Name") == "idempotency_keys":
            read += int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))
            read += int(plan.get("Rows Removed by Filter", 0))
        return read + sum(rows_read(child) for child in plan.get("Plans", []))

    async def run() -> tuple[int, int]:
        conn = await asyncpg.connect(pg_url(migrated))
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(
                    """
                    WITH r AS (
                        INSERT INTO requests (id, app_id, status, priority, input, queued_at, logs,
                                              finished_at)
                        SELECT gen_random_uuid(), 'explain/idem', 'COMPLETED', 0, '{}', now(), '[]', now()
                        FROM generate_series(1, $1::int + $2::int) RETURNING id)
                    INSERT INTO idempotency_keys (owner, key, fingerprint, request_id, created_at, expires_at)
                    SELECT 'explain-owner', id::text, '\\x00', id, now(),
                           now() + CASE WHEN row_number() OVER () <= $2::int THEN interval '-1 hour'
                                        ELSE interval '1 day' END
                    FROM r
                    """,
                    live,
                    expired,
                )
                await conn.execute("ANALYZE idempotency_keys")
                some = await conn.fetchval(
                    "SELECT key FROM idempotency_keys ORDER BY expires_at DESC LIMIT 1"
                )
                lookup = await conn.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + idempotency.LOOKUP_SQL,
                    "explain-owner",
                    some,
                    utcnow(),
                )
                sweep = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + str(delete), utcnow(), batch)
            finally:
                await transaction.rollback()
        finally:
            await conn.close()
        plans = [json.loads(raw) if isinstance(raw, str) else raw for raw in (lookup, sweep)]
        return rows_read(plans[0][0]["Plan"]), rows_read(plans[1][0]["Plan"])

    lookup_read, sweep_read = asyncio.run(run())
    assert lookup_read <= 1
    # The batch's own rows, read once to lock and once to delete, never the live entries.
    assert sweep_read <= 3 * batch, sweep_read
