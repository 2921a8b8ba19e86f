"""The requests table's data access (core.requests_table) against the real PostgreSQL: claims,
positions, cancel, leases, and the migrations themselves. Rows are made by the API's insert."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, inspect, text

from core import failures, requests_table
from core.clock import utcnow
from core.db import session_scope
from core.db_async import close_pool, connection
from core.migrate import downgrade, upgrade
from core.models import Priority, Status
from core.requests_table import (
    CancelOutcome,
    cancel,
    claim,
    complete_failed,
    complete_ok,
    find_stale,
    log_entry,
    renew_lease,
    requeue_expired,
)
from tests.support.databases import empty_database
from tests.support.request_rows import insert_request, load_row

pytestmark = pytest.mark.usefixtures("migrated")
PAYLOAD = {"image_url": "https://example.com/a.png"}


def _new(priority: int = Priority.NORMAL.value) -> uuid.UUID:
    return insert_request(app_id="test/store", payload=PAYLOAD, priority=priority)


def test_only_one_concurrent_claim_wins() -> None:
    request_id = _new()
    barrier = threading.Barrier(8)
    wins: list[int] = []

    def contend(n: int) -> None:
        barrier.wait()
        with session_scope() as session:
            if claim(session, request_id, worker=f"w{n}", lease_s=60) is not None:
                wins.append(n)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    row = load_row(request_id)
    assert (row.status, row.attempts, row.worker) == (Status.IN_PROGRESS, 1, f"w{wins[0]}")


def _position(request_id: uuid.UUID) -> int | None:
    """The queue position the API reports (core.requests_table.fetch, on asyncpg)."""

    async def read() -> int | None:
        try:
            view = await requests_table.fetch(request_id, with_logs=False)
            assert view is not None
            return view.queue_position
        finally:
            await close_pool()

    return asyncio.run(read())


def test_queue_position_by_priority_then_age() -> None:
    # Rows of earlier tests may be waiting too: positions are relative to a baseline.
    low = _new(Priority.LOW.value)
    normal = [_new() for _ in range(3)]
    positions = [_position(rid) for rid in [*normal, low]]
    base = positions[0]
    assert base is not None
    assert positions == [base, base + 1, base + 2, positions[3]]
    assert positions[3] > base + 2
    with session_scope() as session:
        claim(session, normal[0], worker="w", lease_s=60)
    assert _position(normal[1]) == base
    assert _position(normal[0]) is None  # running: no position


def test_insert_reports_the_position_it_joins_at() -> None:
    before = _new()
    base = _position(before)
    assert base is not None

    async def insert(priority: int) -> int | None:
        try:
            async with connection() as conn:
                view = await requests_table.insert(
                    conn,
                    request_id=uuid.uuid4(),
                    app_id="test/store",
                    payload=PAYLOAD,
                    priority=priority,
                    queued_at=utcnow(),
                )
            return view.queue_position
        finally:
            await close_pool()

    assert asyncio.run(insert(Priority.NORMAL.value)) == base + 1
    # A low-priority request queues behind every normal one, this test's included.
    assert asyncio.run(insert(Priority.LOW.value)) >= base + 2  # type: ignore[operator]


def test_positions_beyond_the_exact_count_come_from_the_board(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.settings_reset import reset_cached_settings

    rows = [_new() for _ in range(5)]
    exact = [_position(rid) for rid in rows]  # counted: far fewer than 1000 wait in these tests

    def capped(refresh_s: str) -> None:
        monkeypatch.setenv("QUEUE_POSITION_EXACT_UP_TO", "2")
        monkeypatch.setenv("QUEUE_POSITION_REFRESH_S", refresh_s)
        reset_cached_settings()

    try:
        capped("0.001")  # a fresh read of the waiting rows for every call
        assert [_position(rid) for rid in rows] == exact
        capped("600")  # one read, kept: a request that starts does not move the others
        assert _position(rows[4]) == exact[4]
        with session_scope() as session:
            claim(session, rows[0], worker="w", lease_s=60)
        assert _position(rows[4]) == exact[4]
        capped("0.001")
        assert _position(rows[4]) == exact[4] - 1
    finally:
        monkeypatch.undo()
        reset_cached_settings()


def test_cancel_outcomes() -> None:
    waiting, running = _new(), _new()
    with session_scope() as session:
        claim(session, running, worker="w", lease_s=60)
    with session_scope() as session:
        assert cancel(session, waiting, failures.cancelled()) is CancelOutcome.CANCELLED
        assert cancel(session, running, failures.cancelled()) is CancelOutcome.REQUESTED
        assert cancel(session, waiting, failures.cancelled()) is CancelOutcome.ALREADY_COMPLETED
        assert cancel(session, uuid.uuid4(), failures.cancelled()) is CancelOutcome.NOT_FOUND
        # A cancelled request can never be claimed afterwards.
        assert claim(session, waiting, worker="w", lease_s=60) is None
        assert renew_lease(session, running, 1, lease_s=60) is True
    row = load_row(waiting)
    assert (row.status, row.error_status, row.error_type, row.started_at) == (
        Status.COMPLETED,
        499,
        "client_cancelled",
        None,
    )


@pytest.mark.usefixtures("paused_reconciler")
def test_expired_lease_is_reclaimed_and_fences_the_old_worker() -> None:
    request_id = _new()
    with session_scope() as session:
        first = claim(session, request_id, worker="old", lease_s=60)
        assert first is not None and first.attempts == 1
        # Not claimable while the lease holds.
        assert claim(session, request_id, worker="new", lease_s=60) is None
        session.execute(
            text("UPDATE requests SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": request_id},
        )
    with session_scope() as session:
        stale = find_stale(session, publish_grace_s=0, republish_after_s=3600)
        assert request_id in stale.lease_expired
        assert requeue_expired(session, request_id) == Priority.NORMAL.value
        second = claim(session, request_id, worker="new", lease_s=60)
        assert second is not None and second.attempts == 2
    with session_scope() as session:
        assert renew_lease(session, request_id, 1, lease_s=60) is None  # the old claim is gone
        assert not complete_ok(session, request_id, 1, output={"stale": True}, metrics={})
        # The new claim's renewals carry its log lines (the old claim's would write nothing).
        assert (
            renew_lease(session, request_id, 2, lease_s=60, logs=[log_entry("one"), log_entry("two")])
            is False
        )
        assert renew_lease(session, request_id, 2, lease_s=60, logs=[log_entry("three")]) is False
        assert complete_ok(session, request_id, 2, output={"image": {}}, metrics={"inference_time": 1})
        assert not complete_failed(session, request_id, failures.internal())
    row = load_row(request_id)
    assert row.output == {"image": {}} and row.worker == "new" and row.error is None
    assert [entry["message"] for entry in row.logs] == ["one", "two", "three"]


@pytest.mark.usefixtures("paused_reconciler")
def test_unpublished_rows_are_found_after_the_grace_period() -> None:
    request_id = _new()
    with session_scope() as session:
        assert request_id not in [
            rid for rid, _ in find_stale(session, publish_grace_s=60, republish_after_s=60).unpublished
        ]
        stale = find_stale(session, publish_grace_s=0, republish_after_s=60)
        assert (request_id, Priority.NORMAL.value) in stale.unpublished
    with session_scope() as session:
        session.execute(text("UPDATE requests SET published_at = now() WHERE id = :id"), {"id": request_id})
    with session_scope() as session:
        stale = find_stale(session, publish_grace_s=0, republish_after_s=60)
        assert request_id not in [rid for rid, _ in stale.unpublished]
        session.execute(
            text("UPDATE requests SET published_at = now() - :age WHERE id = :id"),
            {"id": request_id, "age": timedelta(seconds=120)},
        )
    with session_scope() as session:
        stale = find_stale(session, publish_grace_s=0, republish_after_s=60)
        assert request_id in [rid for rid, _ in stale.unpublished]
        cancel(session, request_id, failures.cancelled())


def test_migrations_upgrade_and_downgrade(migrated: dict[str, str]) -> None:
    """On a scratch database of the same server: base -> head -> base -> head."""
    with empty_database(migrated["DATABASE_URL"], "migrations") as scratch_url:
        scratch = create_engine(scratch_url)
        try:
            upgrade(scratch_url)
            assert "requests" in inspect(scratch).get_table_names()
            indexes = {ix["name"] for ix in inspect(scratch).get_indexes("requests")}
            assert {"requests_waiting_order", "requests_running_lease"} <= indexes
            downgrade(scratch_url)
            assert "requests" not in inspect(scratch).get_table_names()
            upgrade(scratch_url)
            assert "requests" in inspect(scratch).get_table_names()
        finally:
            scratch.dispose()
