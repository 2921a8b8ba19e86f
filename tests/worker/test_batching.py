"""A worker with BATCH_MAX_SIZE > 1 takes several waiting requests at once and runs them through
the networks as one batch; each request keeps its own outcome, logs and result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stack.servers import LocalStack
from tests.support.harness import (
    Service,
    base_env,
    pg_url,
    result,
    rows,
    submit,
    submit_many,
    wait_all_completed,
)


@pytest.fixture()
def batching(local_stack: LocalStack, tiny_weights: Path, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    env = base_env(local_stack, tiny_weights, BATCH_MAX_SIZE="4", BATCH_WAIT_MS="50", FAULT_STAGE_DELAY_S="0")
    svc = Service(env, tmp_path)
    try:
        yield svc, svc.api()
    finally:
        svc.close()


def batch_sizes(env: dict[str, str], ids: list[str]) -> dict[str, int | None]:
    with psycopg.connect(pg_url(env)) as conn:
        found = conn.execute(
            "SELECT id::text, (metrics->>'batch_size')::int FROM requests WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchall()
    return dict(found)


def test_waiting_requests_run_as_one_batch(batching: tuple[Service, str]) -> None:
    svc, base = batching
    good = submit_many(base, 3)  # waiting: no worker yet
    bad = submit(base, {"image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}).json()["request_id"]
    svc.worker("batcher")
    found = wait_all_completed(svc.env, [*good, bad], timeout=120)
    assert all(found[rid]["has_output"] and found[rid]["attempts"] == 1 for rid in good), found
    assert found[bad]["error_type"] and not found[bad]["has_output"]  # its own failure only
    assert set(batch_sizes(svc.env, good).values()) == {3}  # one pass through W and G
    for rid in good:
        body = result(base, rid).json()
        assert body["image"]["width"] == 512 and body["image"]["content_type"] == "image/jpeg"
    assert len({rows(svc.env, [rid])[rid]["worker"] for rid in good}) == 1
