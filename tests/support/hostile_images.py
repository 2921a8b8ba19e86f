"""Hostile and unusual input images, derived from the test portrait, for the end-to-end checks."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
from PIL import Image

from tests.support.images import face_jpeg, huge_png

POLYGLOT_MARKER = b"<script>alert('polyglot')</script>"


def _face() -> Image.Image:
    return Image.open(io.BytesIO(face_jpeg())).convert("RGB")


def _save(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _zip_payload() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.html", POLYGLOT_MARKER)
    return buffer.getvalue()


def editable() -> dict[str, bytes]:
    """Unusual but valid portraits: each must be edited like a plain JPEG."""
    face = _face()
    gray16 = Image.fromarray((np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter: the decoder must turn it upright first
    frames = [face, Image.new("RGB", face.size, (0, 0, 255))]
    return {
        "grayscale": _save(face.convert("L"), "JPEG", quality=90),
        "cmyk": _save(face.convert("CMYK"), "JPEG", quality=90),
        "16-bit": _save(gray16, "PNG"),
        "exif-rotated": _save(face.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=90),
        "animated-webp": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
        # A JPEG that is also a ZIP (an HTML page appended): decodes as the JPEG; the payload must
        # never reach the output, which is re-encoded from pixels.
        "jpeg-zip-polyglot": face_jpeg() + _zip_payload(),
    }


def refused() -> dict[str, bytes]:
    """Images that must fail as a 422 on image_url, never as a 500."""
    data = face_jpeg()
    return {
        "truncated": data[: len(data) // 2],
        "header-only": data[:20],
        "huge-pixels": huge_png(),
        # Valid GIF header and valid JavaScript at once; GIF is not an accepted input format.
        "gif-js-polyglot": b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;" + POLYGLOT_MARKER + b"\x00;",
        "random": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
