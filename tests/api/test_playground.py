"""The playground at / in headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
pick the astronaut portrait, move a slider, submit with a key, and see the result image."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from core.db import session_scope
from core.requests_table import get
from tests.support.image_server import ImageServer
from tests.support.images import heic
from tests.support.keyed_api import keyed_api

pytestmark = pytest.mark.usefixtures("workers")

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (root in containers), no GPU, and nothing that phones home during the test.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULT_READY = """() => {
  const img = document.getElementById("result");
  return !img.hidden && img.complete && img.naturalWidth > 0;
}"""


@pytest.fixture(scope="module")
def server(migrated: dict[str, str], logs_dir: Path) -> Iterator[tuple[str, str]]:
    with keyed_api(migrated, logs_dir, "playground-api") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = "no /usr/bin/chromium: `make install` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must exercise the browser, never skip it silently
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield launched
        launched.close()


def _not_blank(png: bytes) -> float:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    return float(pixels.std())


def test_playground_edits_a_portrait(
    server: tuple[str, str], browser: object, image_server: ImageServer, logs_dir: Path
) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    base, key = server
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname or request.url[:5]))
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=true]")
    # Twelve sliders, from the schema's ranges.
    assert page.locator("#sliders input[type=range]").count() == 12
    assert page.locator("#field-smile").get_attribute("max") == "1.3"

    page.set_input_files("#file-input", str(image_server.root / "face.jpg"))
    page.wait_for_function("() => document.getElementById('original').naturalWidth > 0")

    # Without a key the API refuses, and the page says why.
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "Unauthorized" in page.inner_text("#error")

    page.fill("#api-key", key)
    page.click("#key-form button")
    slider = page.locator("#field-smile")
    box = slider.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.85, box["y"] + box["height"] / 2)
    smile = float(page.inner_text("#value-smile"))
    assert smile > 0.5

    page.click("#submit")
    page.wait_for_function(RESULT_READY, timeout=150_000)
    page.screenshot(path=str(logs_dir / "playground.png"), full_page=True)  # for a human, on failure

    steps = page.locator("#history li").all_inner_texts()
    assert steps[0].startswith("queue position") and steps[-1] == "done", steps
    logs = page.inner_text("#logs")
    assert "fetching the input image" in logs and "output stored" in logs
    assert page.inner_text("#error") == ""
    download = page.locator("#download")
    assert download.is_visible() and (download.get_attribute("href") or "").startswith("http")

    # The screenshot of the result is a picture, not a blank or uniform box.
    shot = page.locator("#result").screenshot()
    assert _not_blank(shot) > 10

    # The request went through the public API with the slider's value.
    request_id = page.get_attribute("body", "data-request-id")
    assert request_id
    with session_scope() as session:
        row = get(session, uuid.UUID(request_id))
        assert row is not None and abs(row.input["smile"] - smile) < 1e-6
    # Nothing was loaded from anywhere but this machine (no CDN, no fonts, no analytics).
    assert hosts <= {"127.0.0.1", "data:", "blob:"}, hosts
    page.close()


def test_a_heic_the_browser_gives_no_type_is_uploaded_as_heic(
    server: tuple[str, str], browser: object, image_server: ImageServer
) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    base, key = server
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#api-key", key)
    page.click("#key-form button")
    with Image.open(image_server.root / "face.jpg") as face:
        photo = heic(face, quality=70)
    # Browsers that cannot show HEIC give the file an empty type; the page names it from its extension.
    page.set_input_files("#file-input", {"name": "IMG_0001.HEIC", "mimeType": "", "buffer": photo})
    page.click("#submit")
    page.wait_for_function(RESULT_READY, timeout=150_000)
    assert page.inner_text("#error") == ""
    request_id = page.get_attribute("body", "data-request-id")
    assert request_id
    with session_scope() as session:
        row = get(session, uuid.UUID(request_id))
        assert row is not None
        image_url = row.input["image_url"]
    uploaded = httpx.get(image_url, timeout=30)
    assert uploaded.content == photo and uploaded.headers["content-type"] == "image/heic"
    page.close()
