"""Cancelling a running request: the worker stops at the engine's next stage boundary and the
request ends as client_cancelled (499), with no output stored and no second run."""

from __future__ import annotations

import time

import httpx

from tests.support.harness import (
    QUEUE_BASE,
    Ledger,
    Service,
    output_objects,
    result,
    rows,
    running,
    submit,
    wait_all_completed,
    wait_for,
)


def test_cancel_while_running(standard_service: tuple[Service, str, dict[str, str]]) -> None:
    svc, base, auth = standard_service
    ledger = Ledger("cancel_running")
    rid = submit(base, headers=auth).json()["request_id"]
    wait_for(lambda: running(svc.env, [rid]), 120, "the request to start")
    # Let it get into the engine's stages before cancelling.
    wait_for(
        lambda: any("decode" in line["message"] for line in _logs(base, rid, auth)),
        60,
        "the first engine stage",
    )
    answer = httpx.put(f"{base}/{QUEUE_BASE}/requests/{rid}/cancel", headers=auth, timeout=10)
    assert answer.status_code == 202 and answer.json() == {"status": "CANCELLATION_REQUESTED"}
    cancelled_at = time.monotonic()
    found = wait_all_completed(svc.env, [rid], timeout=60)
    ledger.recovery_s.append(round(time.monotonic() - cancelled_at, 2))
    ledger.settle(svc.env, [rid], expect_ok=False)
    assert found[rid]["error_type"] == "client_cancelled"
    assert found[rid]["attempts"] == 1 and not found[rid]["has_output"]
    assert output_objects(svc.env, rid) == 0
    final = result(base, rid, auth)
    assert final.status_code == 499 and final.json()["error_type"] == "client_cancelled"
    stages = [line["message"] for line in _logs(base, rid, auth)]
    assert not any(message.startswith("encode") for message in stages), stages  # stopped early
    assert (
        httpx.put(f"{base}/{QUEUE_BASE}/requests/{rid}/cancel", headers=auth, timeout=10).status_code == 400
    )
    time.sleep(1)
    assert rows(svc.env, [rid])[rid]["attempts"] == 1


def _logs(base: str, rid: str, auth: dict[str, str]) -> list[dict[str, str]]:
    body = httpx.get(f"{base}/{QUEUE_BASE}/requests/{rid}/status?logs=1", headers=auth, timeout=10).json()
    return body.get("logs") or []
