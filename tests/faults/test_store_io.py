"""X-Fal-Store-IO: 0: once the request ends, by any path, its logs and input are not kept (the
stored input object included); status, result and error stay until the normal result expiry.
Without the header nothing changes."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from core import failures
from core.db import session_scope
from core.models import Status
from core.requests_table import (
    cancel,
    claim,
    claim_unforgotten_inputs,
    complete_failed,
    complete_ok,
    expire_unstarted,
    forget_inputs,
    log_entry,
    renew_lease,
)
from stack.servers import LocalStack
from storage.layout import INPUT_REF_PREFIX, INPUTS
from tests.support.harness import (
    QUEUE_BASE,
    Service,
    base_env,
    pg_url,
    result,
    s3_client,
    status,
    submit,
    wait_all_completed,
    wait_for,
)
from tests.support.request_rows import insert_request, load_row

STORED = {"image_url": INPUT_REF_PREFIX + "inputs/x/y", "smile": 0.5}
NO_STORE = {"X-Fal-Store-IO": "0"}


# -- the table's transitions, on the session's database ---------------------------------------


def _running(store_io: bool) -> uuid.UUID:
    rid = insert_request(app_id="test/store-io", payload=STORED, store_io=store_io)
    with session_scope() as session:
        assert claim(session, rid, worker="w:1", lease_s=60) is not None
        assert renew_lease(session, rid, 1, lease_s=60, logs=[log_entry("running")]) is False
    return rid


@pytest.mark.usefixtures("paused_reconciler")
def test_every_ending_drops_the_logs_of_a_store_io_off_request() -> None:
    ok, failed = _running(False), _running(False)
    queued = insert_request(app_id="test/store-io", payload=STORED, store_io=False)
    late = insert_request(app_id="test/store-io", payload=STORED, store_io=False)
    kept = _running(True)
    with session_scope() as session:
        assert complete_ok(session, ok, 1, output={"image": {}}, metrics={}, logs=[log_entry("done")])
        assert complete_failed(session, failed, failures.internal(), attempt=1, logs=[log_entry("x")])
        assert cancel(session, queued, failures.cancelled()).value == "cancelled"
        session.execute(
            text("UPDATE requests SET start_deadline = now() - interval '1 second' WHERE id = :id"),
            {"id": late},
        )
    with session_scope() as session:
        assert expire_unstarted(session, failures.start_timeout()) >= 1
        assert complete_ok(session, kept, 1, output={"image": {}}, metrics={}, logs=[log_entry("done")])
    for rid in (ok, failed, queued, late):
        row = load_row(rid)
        assert (row.status, row.logs, row.input) == (Status.COMPLETED, None, STORED), rid
    assert load_row(ok).output == {"image": {}} and load_row(failed).error_type == "internal_error"
    assert [line["message"] for line in load_row(kept).logs or []] == ["running", "done"]

    # The backstop's batch: the ended rows with their input still there, and the object's key.
    with session_scope() as session:
        due = {
            d.request_id: d.input_key
            for d in claim_unforgotten_inputs(session, 1000, input_ref_prefix=INPUT_REF_PREFIX)
        }
        assert {ok, failed, queued, late} <= set(due) and kept not in due
        assert due[ok] == "inputs/x/y"
        assert forget_inputs(session, [ok, failed, queued, late, kept]) == 4
    assert all(load_row(rid).input is None for rid in (ok, failed, queued, late))
    assert load_row(kept).input == STORED


# -- real processes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(
    migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path
) -> Iterator[tuple[Service, str]]:
    svc = Service(base_env(migrated_stack, fault_weights), fault_logs / "store-io")
    svc.logs.mkdir(exist_ok=True)
    try:
        base = svc.api()
        svc.worker("sio-a")
        yield svc, base
    finally:
        svc.close()


def _row_of(env: dict[str, str], rid: str) -> dict[str, Any]:
    with psycopg.connect(pg_url(env), connect_timeout=5) as conn:
        found = conn.execute(
            "SELECT status, input, logs, output, error_type, extract(epoch FROM finished_at)"
            " FROM requests WHERE id = %s::uuid",
            (rid,),
        ).fetchone()
    assert found is not None
    keys = ("status", "input", "logs", "output", "error_type", "finished_at")
    return dict(zip(keys, found, strict=True))


def _input_objects(env: dict[str, str], rid: str) -> list[str]:
    listing = s3_client(env).list_objects_v2(Bucket=env["S3_BUCKET"], Prefix=f"{INPUTS}{rid}/")
    return [obj["Key"] for obj in listing.get("Contents", [])]


def _submit(base: str, payload: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> str:
    answer = submit(base, payload, headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["request_id"])


def _gone_after_end(env: dict[str, str], rid: str) -> float:
    """Watch the input object (from before the request ends) until it is gone; seconds from the
    row's finished_at to when it was first seen gone."""
    wait_for(lambda: not _input_objects(env, rid), 120, f"the input object of {rid} to go", every=0.02)
    gone_at = time.time()
    row = wait_for(lambda: (r := _row_of(env, rid))["input"] is None and r, 30, f"the input of {rid} to go")
    assert row["status"] == "COMPLETED"
    return gone_at - float(row["finished_at"])


def test_store_io_off_drops_input_and_logs_once_done(service: tuple[Service, str]) -> None:
    svc, base = service
    rid = _submit(base, headers=NO_STORE)
    assert len(_input_objects(svc.env, rid)) == 1  # a large data URI: kept in the bucket until the end
    took = _gone_after_end(svc.env, rid)
    print(f"store-io: input object gone {took:.3f}s after the worker's completion")
    row = _row_of(svc.env, rid)
    assert (row["error_type"], row["input"], row["logs"]) == (None, None, None)
    answer = result(base, rid)
    assert answer.status_code == 200, answer.text
    image = answer.json()["image"]
    assert httpx.get(image["url"], timeout=10).status_code == 200
    with_logs = httpx.get(f"{base}/{QUEUE_BASE}/requests/{rid}/status", params={"logs": 1}, timeout=10)
    assert with_logs.status_code == 200 and with_logs.json()["logs"] is None
    assert with_logs.json()["status"] == "COMPLETED"
    # The status stream says the same: no logs, not an empty list.
    stream_url = f"{base}/{QUEUE_BASE}/requests/{rid}/status/stream"
    with httpx.stream("GET", stream_url, params={"logs": 1}, timeout=10) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    last = json.loads(events[-1][len("data: ") :])
    assert last["status"] == "COMPLETED" and last["logs"] is None


def test_store_io_off_failure_and_cancel_drop_the_input(service: tuple[Service, str]) -> None:
    """A failed run drops its input like a success; a request cancelled while it waits (the API
    ends it, and cannot reach the bucket's deletion) loses it through the reconciler's backstop."""
    svc, base = service
    junk = "data:image/png;base64," + base64.b64encode(os.urandom(6000)).decode()
    failed = _submit(base, {"image_url": junk}, NO_STORE)
    took = _gone_after_end(svc.env, failed)
    print(f"store-io: failed request's input object gone {took:.3f}s after its failure")
    row = _row_of(svc.env, failed)
    assert row["error_type"] is not None and row["logs"] is None
    assert result(base, failed).status_code == 422

    busy = _submit(base)  # keeps the one worker process busy while the next one waits
    wait_for(lambda: _row_of(svc.env, busy)["status"] == "IN_PROGRESS", 120, "the busy request to run")
    waiting = _submit(base, headers=NO_STORE)
    assert len(_input_objects(svc.env, waiting)) == 1
    answer = httpx.put(f"{base}/{QUEUE_BASE}/requests/{waiting}/cancel", timeout=10)
    assert answer.status_code == 202, answer.text
    took = _gone_after_end(svc.env, waiting)
    print(f"store-io: cancelled request's input object gone {took:.3f}s after the cancel (backstop)")
    row = _row_of(svc.env, waiting)
    assert (row["error_type"], row["logs"]) == ("client_cancelled", None)
    assert result(base, waiting).status_code == 499
    wait_all_completed(svc.env, [busy], timeout=120)


def test_without_the_header_input_and_logs_stay(service: tuple[Service, str]) -> None:
    svc, base = service
    rid = _submit(base)
    wait_all_completed(svc.env, [rid], timeout=120)
    time.sleep(1.5)  # three reconciler rounds: the backstop leaves it alone
    row = _row_of(svc.env, rid)
    assert row["input"] is not None and row["logs"]
    assert len(_input_objects(svc.env, rid)) == 1
    logs = httpx.get(f"{base}/{QUEUE_BASE}/requests/{rid}/status", params={"logs": 1}, timeout=10).json()
    assert [line["message"] for line in logs["logs"]][:1] == ["fetching the input image"]
    assert status(base, rid).json()["status"] == "COMPLETED"
