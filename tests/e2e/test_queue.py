"""End to end over real HTTP: the API under uvicorn, two Celery worker processes, PostgreSQL,
Redis and S3 all real; the tiny engine architecture with random weights."""

from __future__ import annotations

import io
import json
import socket
import time
import uuid

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from core.db import session_scope
from core.models import RequestRow
from tests.support.client_helpers import APP, QUEUE_BASE, cancel, result, status, submit, wait_completed
from tests.support.image_server import ImageServer

pytestmark = pytest.mark.usefixtures("workers")

NO_CROP = {"flag_do_crop": False}


def test_submit_status_result(api: str, image_server: ImageServer) -> None:
    sub = submit(api, {"image_url": image_server.url("face.jpg"), "smile": 0.6, "blink": -5})
    request_id = sub["request_id"]
    assert sub["status"] == "IN_QUEUE" and sub["queue_position"] >= 0
    assert sub["gateway_request_id"] == request_id
    for key, suffix in (("response_url", ""), ("status_url", "/status"), ("cancel_url", "/cancel")):
        assert sub[key] == f"{api}/{QUEUE_BASE}/requests/{request_id}{suffix}"

    done = wait_completed(api, request_id)
    assert "error" not in done, done
    assert done["metrics"]["inference_time"] > 0
    messages = [entry["message"] for entry in done["logs"]]
    assert any("fetching" in m for m in messages) and any("output stored" in m for m in messages)
    assert {entry["level"] for entry in done["logs"]} <= {"INFO", "ERROR"}
    for flag in ("0", "false"):
        assert status(api, request_id, flag).json()["logs"] is None
    assert status(api, request_id, "true").json()["logs"]

    response = result(api, request_id)
    assert response.status_code == 200
    assert response.headers["x-fal-request-id"] == request_id
    image = response.json()["image"]
    assert image["content_type"] == "image/jpeg" and image["file_name"].endswith(".jpg")
    data = httpx.get(image["url"], timeout=30).content
    assert len(data) == image["file_size"]
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (image["width"], image["height"]) == (512, 512)

    response = cancel(api, request_id)
    assert (response.status_code, response.json()["status"]) == (400, "ALREADY_COMPLETED")


def test_status_stream_ends_after_completed(api: str, image_server: ImageServer) -> None:
    sub = submit(api, {"image_url": image_server.url("noise.png"), **NO_CROP, "output_format": "png"})
    events = []
    url = f"{api}/{QUEUE_BASE}/requests/{sub['request_id']}/status/stream"
    with httpx.stream("GET", url, params={"logs": "1"}, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    # The server closed the stream itself, right after the COMPLETED event.
    assert events[-1]["status"] == "COMPLETED" and "error" not in events[-1]
    assert [e["status"] for e in events[:-1]] == sorted(
        (e["status"] for e in events[:-1]), key=["IN_QUEUE", "IN_PROGRESS"].index
    )
    streamed = [entry["message"] for e in events for entry in (e.get("logs") or [])]
    polled = [entry["message"] for entry in status(api, sub["request_id"], "1").json()["logs"]]
    assert streamed == polled  # each line exactly once, in order
    assert result(api, sub["request_id"]).json()["image"]["content_type"] == "image/png"


def test_sync_run(api: str, image_server: ImageServer) -> None:
    response = httpx.post(
        f"{api}/run/{APP}",
        json={"image_url": image_server.url("noise.png"), **NO_CROP, "output_format": "png"},
        timeout=180,
    )
    assert response.status_code == 200, response.text
    assert uuid.UUID(response.headers["x-fal-request-id"])
    image = response.json()["image"]
    assert image["content_type"] == "image/png" and image["file_size"] > 0


def test_sync_run_reports_input_errors(api: str, image_server: ImageServer) -> None:
    response = httpx.post(
        f"{api}/run/{APP}", json={"image_url": image_server.url("not-an-image.txt")}, timeout=120
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "image_load_error"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"image_url": 5},
        {"image_url": "ftp://example.com/a.png"},
        {"image_url": "https://example.com/a.png", "smile": 5},
        {"image_url": "https://example.com/a.png", "output_format": "gif"},
        {"image_url": "https://example.com/a.png", "dsize": "big"},
        {"image_url": "https://example.com/a.png", "not_a_field": 1},
    ],
)
@pytest.mark.parametrize("prefix", ["", "/run"])
def test_schema_violations_are_422(api: str, payload: dict[str, object], prefix: str) -> None:
    response = httpx.post(f"{api}{prefix}/{APP}", json=payload, timeout=30)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail and "loc" in detail[0] and "msg" in detail[0]


def test_malformed_json_and_headers_are_422(api: str) -> None:
    response = httpx.post(
        f"{api}/{APP}", content=b"{not json", headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 422 and isinstance(response.json()["detail"], list)
    response = httpx.post(
        f"{api}/{APP}",
        json={"image_url": "https://example.com/a.png"},
        headers={"x-fal-queue-priority": "urgent"},
        timeout=30,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "x-fal-queue-priority"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_bad_image_urls_end_with_clear_errors(api: str, image_server: ImageServer) -> None:
    cases = {
        "unreachable": (
            f"http://127.0.0.1:{_closed_port()}/face.jpg",
            "file_download_error",
            "could not be fetched",
        ),
        "missing": (image_server.url("nope.jpg"), "file_download_error", "HTTP 404"),
        "not an image": (
            image_server.url("not-an-image.txt"),
            "image_load_error",
            "not point at a supported image",
        ),
        "too many bytes": (image_server.url("too-big.jpg"), "image_too_large", "too large"),
        "too many pixels": (image_server.url("huge.png"), "image_too_large", "pixels"),
        "private address": ("http://10.0.0.1/face.jpg", "file_download_error", "non-public address"),
        "metadata address": ("http://169.254.169.254/latest/meta-data", "file_download_error", "non-public"),
        "redirect to private": (image_server.url("redirect-private"), "file_download_error", "non-public"),
        "bad data uri": ("data:image/png;base64,AAAA", "image_load_error", "supported image"),
    }
    submitted = {name: submit(api, {"image_url": url})["request_id"] for name, (url, _, _) in cases.items()}
    for name, request_id in submitted.items():
        _, error_type, words = cases[name]
        done = wait_completed(api, request_id, timeout=60)
        assert done["error_type"] == error_type, (name, done)
        assert words in done["error"], (name, done["error"])
        response = result(api, request_id)
        assert response.status_code == 422, (name, response.text)
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "image_url"] and detail["type"] == error_type


def test_redirects_are_followed(api: str, image_server: ImageServer) -> None:
    request_id = submit(api, {"image_url": image_server.url("redirect-face"), **NO_CROP})["request_id"]
    assert "error" not in wait_completed(api, request_id)


def test_unknown_requests_are_404(api: str) -> None:
    for request_id in (str(uuid.uuid4()), "not-a-uuid"):
        assert status(api, request_id).status_code == 404
        assert result(api, request_id).status_code == 404
        response = cancel(api, request_id)
        assert response.status_code == 404 and response.json()["status"] == "NOT_FOUND"
        assert httpx.get(f"{api}/{QUEUE_BASE}/requests/{request_id}/status/stream").status_code == 404
    assert status(api, str(uuid.uuid4())).json() == {"detail": "Request not found"}


def test_two_workers_share_the_queue(api: str, image_server: ImageServer) -> None:
    ids = [
        submit(api, {"image_url": image_server.url("noise.png"), **NO_CROP})["request_id"] for _ in range(4)
    ]
    for request_id in ids:
        assert "error" not in wait_completed(api, request_id)
    with session_scope() as session:
        rows = session.execute(
            select(RequestRow).where(RequestRow.id.in_([uuid.UUID(i) for i in ids]))
        ).scalars()
        rows = list(rows)
        assert all(row.attempts == 1 and row.started_at and row.finished_at for row in rows)
        workers = {row.worker for row in rows}
    assert len(workers) == 2, workers


def test_health(api: str) -> None:
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    spec = httpx.get(f"{api}/openapi.json").json()
    assert f"/{APP}" in spec["paths"] and f"/run/{APP}" in spec["paths"]
    assert f"/{QUEUE_BASE}/requests/{{request_id}}/status" in spec["paths"]


def test_cancel_while_running_stops_at_the_next_stage(api: str, image_server: ImageServer) -> None:
    request_id = submit(api, {"image_url": image_server.url("face.jpg")})["request_id"]
    deadline = time.monotonic() + 60
    while status(api, request_id).json()["status"] == "IN_QUEUE" and time.monotonic() < deadline:
        time.sleep(0.05)
    response = cancel(api, request_id)
    assert (response.status_code, response.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    done = wait_completed(api, request_id, timeout=60)
    assert done["error_type"] == "client_cancelled", done
    assert result(api, request_id).status_code == 499
