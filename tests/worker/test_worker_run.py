"""The worker's bookkeeping around an edit, against the real PostgreSQL: buffered log lines, their
hand-over to the completing statement, cancellation seen off the engine's thread, the claim's
fencing, and what `inference_time` counts."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from core import failures
from core.db import session_scope
from core.models import Priority, RequestRow
from core.requests_table import (
    cancel,
    claim,
    complete_failed,
    complete_ok,
    log_entry,
    renew_lease,
)
from storage.s3 import NO_CONTINUE_MAX_BYTES, _skip_continue
from tests.support.request_rows import insert_request
from worker.liveportrait.engine import EditResult
from worker.processing import engine_seconds
from worker.run_context import LOG_FLUSH_DELAY_S, Cancelled, RunContext

pytestmark = pytest.mark.usefixtures("migrated")
PAYLOAD = {"image_url": "https://example.com/a.png"}


def _claimed() -> tuple[uuid.UUID, int]:
    request_id = insert_request(app_id="test/worker", payload=PAYLOAD, priority=Priority.NORMAL.value)
    with session_scope() as session:
        row = claim(session, request_id, worker="w", lease_s=60, max_attempts=3)
    assert row is not None and row.id == request_id and row.input == PAYLOAD
    return request_id, row.attempts


def _messages(request_id: uuid.UUID) -> list[str]:
    with session_scope() as session:
        row = session.get(RequestRow, request_id)
        assert row is not None
        return [entry["message"] for entry in row.logs]


def _wait(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_renewal_appends_lines_only_while_the_claim_holds() -> None:
    request_id, attempt = _claimed()
    with session_scope() as session:
        assert renew_lease(session, request_id, attempt, lease_s=60, logs=[log_entry("one")]) is False
        assert renew_lease(session, request_id, attempt, lease_s=60) is False
        # A stale claim (an older attempt) renews nothing and writes nothing.
        assert renew_lease(session, request_id, attempt - 1, lease_s=60, logs=[log_entry("stale")]) is None
    assert _messages(request_id) == ["one"]


def test_completion_carries_the_last_lines_and_stays_fenced() -> None:
    request_id, attempt = _claimed()
    with session_scope() as session:
        renew_lease(session, request_id, attempt, lease_s=60, logs=[log_entry("first")])
    with session_scope() as session:
        lines = [log_entry("stale")]
        assert not complete_ok(session, request_id, attempt + 1, output={}, metrics={}, logs=lines)
        assert complete_ok(
            session,
            request_id,
            attempt,
            output={"image": {"url": "u"}},
            metrics={"inference_time": 0.5},
            logs=[log_entry("second"), log_entry("third")],
        )
        assert not complete_failed(session, request_id, failures.internal(), logs=[log_entry("late")])
    with session_scope() as session:
        row = session.get(RequestRow, request_id)
        assert row is not None
        assert (row.status, row.output, row.metrics) == (
            "COMPLETED",
            {"image": {"url": "u"}},
            {"inference_time": 0.5},
        )
        assert row.finished_at is not None and row.lease_expires_at is None
    assert _messages(request_id) == ["first", "second", "third"]


def test_failure_carries_the_last_lines() -> None:
    request_id, attempt = _claimed()
    with session_scope() as session:
        assert complete_failed(
            session, request_id, failures.internal(), attempt=attempt, logs=[log_entry("failed: x", "ERROR")]
        )
    assert _messages(request_id) == ["failed: x"]


def test_log_lines_are_written_in_the_background_and_the_rest_handed_over() -> None:
    request_id, attempt = _claimed()
    with RunContext(request_id, attempt, lease_s=60) as ctx:
        ctx.log("one")
        ctx.log("two")
        _wait(lambda: _messages(request_id) == ["one", "two"])  # written without the caller waiting
        ctx.log("three")
        rest = ctx.close()
        # Whatever the thread did not write is handed over, in order, and never written by it.
        written = _messages(request_id)
        assert [*written, *(entry["message"] for entry in rest)] == ["one", "two", "three"]
        time.sleep(LOG_FLUSH_DELAY_S * 3)
        assert _messages(request_id) == written
        assert ctx.close() == []
    with session_scope() as session:
        assert complete_ok(session, request_id, attempt, output={}, metrics={}, logs=rest)
    assert _messages(request_id) == ["one", "two", "three"]


def test_lines_left_at_an_unexpected_exit_are_still_written() -> None:
    request_id, attempt = _claimed()
    with pytest.raises(RuntimeError), RunContext(request_id, attempt, lease_s=60) as ctx:
        ctx.log("before the crash")
        raise RuntimeError("boom")
    assert _messages(request_id) == ["before the crash"]


def _stops(ctx: RunContext) -> bool:
    """Whether the engine's next check would end the run."""
    try:
        ctx.check()
    except Cancelled:
        return True
    return False


def test_cancellation_is_seen_without_the_engine_touching_the_database() -> None:
    request_id, attempt = _claimed()
    with RunContext(request_id, attempt, lease_s=60) as ctx:
        ctx.check()  # not cancelled: returns at once
        with session_scope() as session:
            cancel(session, request_id, failures.cancelled())

        _wait(lambda: _stops(ctx))


def test_a_lost_claim_stops_the_run() -> None:
    request_id, attempt = _claimed()
    with RunContext(request_id, attempt + 1, lease_s=60) as ctx:  # as if another worker had taken it
        _wait(lambda: _stops(ctx))


def _result(**timings: float) -> EditResult:
    return EditResult(b"", "image/png", 1, 1, timings)


def test_inference_time_is_the_engines_own_time() -> None:
    result = _result(detect=0.2, warping=0.5, encode=0.25, total=1.0)
    # Encoding the output and the worker's callbacks are not the engine's.
    assert engine_seconds(result, callback_s=0.05) == pytest.approx(0.7)
    # In a batch, the encodings of the items finished before this one ran within its total.
    assert engine_seconds(result, callback_s=0.0, encoded_before_s=0.25) == pytest.approx(0.5)
    assert engine_seconds(_result(encode=2.0, total=1.0), callback_s=0.0) == 0.0


class _Request:
    def __init__(self, length: int) -> None:
        self.headers = {"Content-Length": str(length), "Expect": "100-continue"}


def test_small_puts_skip_the_continue_round_trip() -> None:
    small, large = _Request(100_000), _Request(NO_CONTINUE_MAX_BYTES + 1)
    _skip_continue(small)
    _skip_continue(large)
    assert "Expect" not in small.headers and large.headers["Expect"] == "100-continue"
