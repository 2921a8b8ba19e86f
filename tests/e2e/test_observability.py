"""/metrics and JSON logs end to end: one request with a webhook runs through the real API,
workers and a webhook dispatcher; then every metric family is read back from /metrics, and the
request_id is found in the API's, the worker's and the dispatcher's JSON log lines. Last, the
counters are read again by a restarted API and after the finished rows are deleted."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from core import metric_rollups
from core.db import session_scope
from core.models import RequestRow, Status
from core.requests_table import claim
from core.webhook_models import DeliveryState, WebhookDelivery
from tests.support.client_helpers import APP, submit, wait_completed
from tests.support.image_server import ImageServer
from tests.support.processes import BIN, Child, start_api
from tests.support.request_rows import insert_request
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("workers")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Finished:
    ok_id: str  # a successful edit, delivered to a webhook
    failed_id: str  # a request that timed out before it started
    hook_path: str


@pytest.fixture(scope="module")
def dispatcher(migrated: dict[str, str], logs_dir: Path) -> Iterator[Child]:
    child = Child(
        "obs-dispatcher",
        [
            str(BIN / "celery"),
            "-A",
            "worker.celery_app",
            "worker",
            "-n",
            "obs-dispatcher@%h",
            "-Q",
            f"{migrated['QUEUE_NAME']}.webhooks",
            "-P",
            "threads",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        migrated,
        logs_dir,
    )
    child.wait_for_log("ready.", timeout=60)
    yield child
    child.stop()


@pytest.fixture(scope="module")
def finished(api: str, image_server: ImageServer, dispatcher: Child) -> Iterator[Finished]:
    with Receiver().running() as receiver:
        path = f"/obs/{uuid.uuid4().hex}"
        ok = submit(
            api,
            {"image_url": image_server.url("face.jpg"), "smile": 0.5},
            params={"fal_webhook": receiver.url(path)},
        )
        failed = submit(
            api, {"image_url": image_server.url("face.jpg")}, headers={"X-Fal-Request-Timeout": "0.001"}
        )
        wait_completed(api, ok["request_id"])
        wait_completed(api, failed["request_id"])
        receiver.wait_for(path, accepted=True, timeout=60)
        yield Finished(ok["request_id"], failed["request_id"], path)


def _scrape(api: str) -> Samples:
    response = httpx.get(f"{api}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _buckets(samples: Samples, name: str, **labels: str) -> list[float]:
    found = [
        (float(dict(key)["le"]), value)
        for (sample, key), value in samples.items()
        if sample == f"{name}_bucket" and {k: v for k, v in key if k != "le"} == labels
    ]
    return [value for _, value in sorted(found)]


def test_request_and_queue_metrics(api: str, finished: Finished) -> None:
    samples = _scrape(api)
    assert _value(samples, "portrait_metrics_source_up", source="database") == 1
    assert _value(samples, "portrait_requests", status="COMPLETED") >= 2
    assert _value(samples, "portrait_requests_completed_total", outcome="ok") >= 1
    assert _value(samples, "portrait_requests_completed_total", outcome="request_timeout") >= 1
    assert ("portrait_queue_depth", ()) in samples


def test_queue_depth_and_busy_workers_follow_the_rows(api: str, finished: Finished) -> None:
    # One waiting (low priority, never published: its run is not wanted) and one claimed, as a
    # worker holds it under a live lease.
    payload = {"image_url": "http://127.0.0.1:9/x.jpg"}
    waiting = insert_request(app_id=APP, payload=payload, priority=1)
    running = insert_request(app_id=APP, payload=payload, priority=0)
    ids = [waiting, running]
    try:
        with session_scope() as session:
            assert claim(session, running, worker=f"metrics-test:{uuid.uuid4().hex[:6]}", lease_s=120)
        samples = _scrape(api)
        assert _value(samples, "portrait_queue_depth") >= 2
        assert _value(samples, "portrait_queue_waiting", priority="low") >= 1
        assert _value(samples, "portrait_queue_running") >= 1
        assert _value(samples, "portrait_workers_busy") >= 1
        assert _value(samples, "portrait_queue_oldest_wait_seconds") >= 0
    finally:
        with session_scope() as session:
            session.execute(delete(RequestRow).where(RequestRow.id.in_(ids)))


def test_wait_run_and_stage_histograms(api: str, finished: Finished) -> None:
    samples = _scrape(api)
    for name in ("portrait_queue_wait_seconds", "portrait_run_seconds"):
        buckets = _buckets(samples, name)
        assert buckets == sorted(buckets), f"{name} buckets must be cumulative"
        assert buckets[-1] == _value(samples, f"{name}_count") >= 2  # the +Inf bucket is the count
        assert _value(samples, f"{name}_sum") > 0
    # Stage timings come from what the worker stored with the successful edit.
    for stage in ("decoder", "warping", "encode"):
        assert _value(samples, "portrait_engine_stage_seconds_count", stage=stage) >= 1, stage
        assert _buckets(samples, "portrait_engine_stage_seconds", stage=stage)[-1] >= 1


def test_stage_timings_stay_out_of_the_fal_status(api: str, finished: Finished) -> None:
    body = wait_completed(api, finished.ok_id)
    assert set(body["metrics"]) == {"inference_time"}


def test_worker_and_webhook_metrics(api: str, finished: Finished) -> None:
    samples = _scrape(api)
    assert _value(samples, "portrait_metrics_source_up", source="redis") == 1
    assert _value(samples, "portrait_workers", kind="edit") >= 2  # worker-a and worker-b
    assert _value(samples, "portrait_worker_processes", kind="edit") >= 2
    assert _value(samples, "portrait_workers", kind="webhooks") >= 1
    assert _value(samples, "portrait_webhook_deliveries", state="delivered") >= 1
    assert _value(samples, "portrait_webhook_attempts_total", outcome="delivered") >= 1


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def test_json_logs_carry_the_request_id_everywhere(
    finished: Finished, logs_dir: Path, dispatcher: Child
) -> None:
    rid = finished.ok_id
    api_lines = [e for e in _json_lines(logs_dir / "api.log") if e.get("request_id") == rid]
    assert any(e["logger"] == "api.access" and e.get("http_method") == "POST" for e in api_lines), api_lines
    assert all({"ts", "level", "logger", "message"} <= e.keys() for e in api_lines)

    worker_lines = [
        e
        for name in ("worker-a", "worker-b")
        for e in _json_lines(logs_dir / f"{name}.log")
        if e.get("request_id") == rid
    ]
    messages = " | ".join(e["message"] for e in worker_lines)
    assert "fetching the input image" in messages and "output stored" in messages, messages

    hook_lines = [e for e in _json_lines(dispatcher.log_path) if e.get("request_id") == rid]
    assert any("delivered" in e["message"] for e in hook_lines), hook_lines


def _counters(samples: Samples) -> Samples:
    """The counter and histogram samples; `running` attempts are a current count."""
    return {
        key: value
        for key, value in samples.items()
        if key[0].endswith(("_total", "_bucket", "_count", "_sum")) and ("outcome", "running") not in key[1]
    }


def _wait_delivered(request_id: str, timeout: float = 30) -> None:
    # The receiver has the POST before the dispatcher commits the outcome.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            states = session.execute(
                select(WebhookDelivery.state).where(WebhookDelivery.request_id == uuid.UUID(request_id))
            ).scalars()
            if list(states) == [DeliveryState.DELIVERED.value]:
                return
        time.sleep(0.1)
    raise AssertionError(f"the webhook of {request_id} was not recorded as delivered")


def test_a_restarted_api_reads_the_same_counters(
    api: str, finished: Finished, migrated: dict[str, str], logs_dir: Path
) -> None:
    _wait_delivered(finished.ok_id)
    first = _scrape(api)
    child, restarted = start_api(migrated, logs_dir, name="obs-api-restarted")
    try:
        second = _scrape(restarted)
    finally:
        child.stop()
    assert _counters(second) == _counters(first)
    assert _value(second, "portrait_requests_completed_total", outcome="ok") >= 1


def test_counters_stay_monotonic_when_finished_rows_are_deleted(api: str, finished: Finished) -> None:
    """Last in this module: the finished requests go, as the retention sweep deletes them."""
    _wait_delivered(finished.ok_id)
    before = _scrape(api)
    ids = [uuid.UUID(finished.ok_id), uuid.UUID(finished.failed_id)]
    with session_scope() as session:
        states = session.execute(
            delete(WebhookDelivery)
            .where(WebhookDelivery.request_id.in_(ids))
            .returning(WebhookDelivery.state)
        ).scalars()
        by_state = Counter(str(state) for state in states)
        deleted = session.execute(
            delete(RequestRow)
            .where(RequestRow.id.in_(ids), RequestRow.status == Status.COMPLETED.value)
            .returning(RequestRow.id)
        ).all()
        metric_rollups.record_deleted(session, requests=len(deleted), deliveries_by_state=by_state)
    assert (len(deleted), dict(by_state)) == (2, {"delivered": 1})
    after = _scrape(api)
    assert _counters(after) == _counters(before)
    completed = "portrait_requests"
    assert _value(after, completed, status="COMPLETED") == _value(before, completed, status="COMPLETED") - 2
    delivered = "portrait_webhook_deliveries"
    assert _value(after, delivered, state="delivered") == _value(before, delivered, state="delivered") - 1
