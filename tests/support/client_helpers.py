"""Small HTTP helpers shared by the end-to-end tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

APP = "fal-ai/live-portrait/image"
QUEUE_BASE = "fal-ai/live-portrait"


def submit(api: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = httpx.post(f"{api}/{APP}", json=payload, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["x-fal-request-id"] == body["request_id"]
    return body


def status(api: str, request_id: str, logs: str = "0") -> httpx.Response:
    return httpx.get(f"{api}/{QUEUE_BASE}/requests/{request_id}/status", params={"logs": logs}, timeout=30)


def wait_completed(api: str, request_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = status(api, request_id, logs="1")
        body: dict[str, Any] = response.json()
        if body["status"] == "COMPLETED":
            assert response.status_code == 200
            return body
        assert response.status_code == 202
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} did not complete in {timeout} s")


def result(api: str, request_id: str) -> httpx.Response:
    return httpx.get(f"{api}/{QUEUE_BASE}/requests/{request_id}", timeout=30)


def cancel(api: str, request_id: str) -> httpx.Response:
    return httpx.put(f"{api}/{QUEUE_BASE}/requests/{request_id}/cancel", timeout=30)
