"""Hostile input: property-based fuzzing of every endpoint from the OpenAPI document (no 5xx, no
response outside its schema), hostile images end to end, oversized JSON bodies (413) and
slow-loris clients (408, and the server keeps serving everyone else)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.harness import APP, SCALE, Ledger, Service, result, submit, wait_all_completed
from tests.support.hostile_images import POLYGLOT_MARKER, editable, refused

FUZZ_EXAMPLES = 8 * SCALE
StandardService = tuple[Service, str, dict[str, str]]


@pytest.fixture(scope="module")
def fuzz_target(standard_service: StandardService) -> Iterator[tuple[str, dict[str, str]]]:
    """An API replica of the standard service on a queue no worker consumes: the fuzzer's
    submissions are stored and answered, but never cost an edit; /run/ gives up after 1 s."""
    svc, _, auth = standard_service
    name = "fuzz-api"
    base = svc.api(
        name,
        QUEUE_NAME=svc.env["QUEUE_NAME"] + "fuzz",
        SYNC_RUN_TIMEOUT_S="1",
        RECONCILE_INTERVAL_S="0",
    )
    yield base, auth
    svc.children.pop(name).stop()


def test_fuzz_every_endpoint(fuzz_target: tuple[str, dict[str, str]]) -> None:
    """Every operation of /openapi.json, FUZZ_EXAMPLES generated cases each (schemathesis's
    strategies driven by hypothesis directly: its pytest plugin does not support pytest 9)."""
    base, auth = fuzz_target
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    problems: list[str] = []
    for operation in operations:

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            _call_and_check(case, base, auth)

        try:
            fuzz()
        except Exception as exc:  # collect every operation's first failure, then report them all
            problems.append(f"{operation.label}: {exc}")
    assert not problems, "\n".join(problems)


def _call_and_check(case: Any, base: str, auth: dict[str, str]) -> None:
    response = case.call(base_url=base, headers={**auth, **(case.headers or {})}, timeout=15)
    body = response.text[:300]
    if response.status_code >= 500:
        # The only 5xx allowed: /run/ giving up on a request no worker will take (fal's 504).
        sync_timeout = case.path.startswith("/run/") and response.status_code == 504
        assert sync_timeout and "request_timeout" in body, (
            case.method,
            case.path,
            response.status_code,
            body,
        )
    case.validate_response(response, checks=[response_schema_conformance])


@pytest.mark.parametrize("kind", ["editable", "refused"])
def test_hostile_images_end_to_end(standard_service: StandardService, kind: str) -> None:
    svc, base, auth = standard_service
    images = editable() if kind == "editable" else refused()
    ids: dict[str, str] = {}
    for name, data in images.items():
        uri = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
        answer = submit(base, {"image_url": uri}, headers=auth)
        assert answer.status_code == 200, (name, answer.text)
        ids[name] = answer.json()["request_id"]
    ledger = Ledger(f"hostile_images_{kind}")
    wait_all_completed(svc.env, list(ids.values()), timeout=240)
    ledger.settle(svc.env, list(ids.values()), expect_ok=kind == "editable")
    for name, rid in ids.items():
        answer = result(base, rid, auth)
        if kind == "editable":
            assert answer.status_code == 200, (name, answer.text)
            output = httpx.get(answer.json()["image"]["url"], timeout=10).content
            assert output.startswith(b"\xff\xd8") and POLYGLOT_MARKER not in output, name
        else:
            assert answer.status_code == 422, (name, answer.text)
            [detail] = answer.json()["detail"]
            assert detail["loc"] == ["body", "image_url"] and detail["msg"], name


def test_oversized_json_body_is_413(standard_service: StandardService) -> None:
    svc, base, auth = standard_service
    limit = int(svc.env["MAX_JSON_BODY_BYTES"])
    big = {"image_url": "data:image/jpeg;base64," + "A" * (limit + 10)}
    answer = httpx.post(f"{base}/{APP}", json=big, headers=auth, timeout=30)
    assert answer.status_code == 413 and "too large" in answer.json()["detail"]
    # A declared length over the limit is refused before a byte of the body is read.
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(_head(base, auth, limit * 100))
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_slow_loris_clients_are_cut_off_and_others_served(standard_service: StandardService) -> None:
    _, base, auth = standard_service
    port = int(base.rsplit(":", 1)[1])
    clients = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(_head(base, auth, 1000) + b"{")
        clients.append(sock)
    started = time.monotonic()
    # While twenty clients trickle their bodies, everyone else is served at once.
    for sock in clients:
        sock.sendall(b" ")
    for _ in range(5):
        t0 = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 1.0
        for sock in clients:
            sock.sendall(b" ")
        time.sleep(0.2)
    # Each trickler is answered 408 once BODY_READ_TIMEOUT_S (2 s here) has passed.
    for sock in clients:
        with sock:
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - started < 10


def _head(base: str, auth: dict[str, str], length: int) -> bytes:
    host = base.removeprefix("http://")
    lines = [
        f"POST /{APP} HTTP/1.1",
        f"Host: {host}",
        f"Authorization: {auth['Authorization']}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()
