"""Download a result image and check it: decodable, the declared size and content type."""

from __future__ import annotations

import io
from typing import Any

import httpx
from PIL import Image

_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}


def assert_result_image(output: dict[str, Any], content_type: str = "image/jpeg") -> Image.Image:
    image = output["image"]
    assert image["content_type"] == content_type
    response = httpx.get(image["url"], timeout=30, follow_redirects=True)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    decoded = Image.open(io.BytesIO(response.content))
    decoded.load()  # a truncated or corrupt file fails here, not just at the header
    assert decoded.format == _FORMATS[content_type]
    assert decoded.size == (image["width"], image["height"]) and min(decoded.size) > 0
    assert image["file_size"] == len(response.content)
    return decoded
