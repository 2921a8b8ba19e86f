"""The official JavaScript client (@fal-ai/client 1.10.1, on Node) against the service and its
workers, pointed at it both ways README.md describes: a requestMiddleware rewriting fal's URLs,
and proxyUrl through the service's own /api/fal/proxy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.image_checks import assert_result_image
from tests.support.image_server import ImageServer
from tests.support.js_client import run_script

pytestmark = pytest.mark.usefixtures("workers")


@pytest.mark.parametrize("mode", ["middleware", "proxy"])
def test_js_client(mode: str, api: str, image_server: ImageServer) -> None:
    out: dict[str, Any] = run_script(
        "drive.mjs",
        {
            "base": api,
            "mode": mode,
            "imageUrl": image_server.url("noise.png"),
            "pngPath": str(image_server.root / "noise.png"),
        },
    )

    polling = out["polling"]
    assert_result_image(polling["data"])
    assert polling["requestId"] and polling["statuses"][-1] == "COMPLETED"
    assert polling["sawLogs"]

    streaming = out["streaming"]
    assert_result_image(streaming["data"], "image/png")
    assert streaming["requestId"] and streaming["statuses"][-1] == "COMPLETED"

    queue = out["queue"]
    assert queue["requestId"] == queue["submittedId"] and queue["statuses"][-1] == "COMPLETED"
    assert_result_image(queue["data"])
    uploaded = httpx.get(queue["uploadedUrl"], timeout=30, follow_redirects=True)
    assert uploaded.content == (image_server.root / "noise.png").read_bytes()

    invalid = out["invalid"]
    assert invalid["thrown"] and invalid["isValidationError"] and invalid["status"] == 422
    assert invalid["fieldErrors"][0]["loc"] == ["body", "smile"]
