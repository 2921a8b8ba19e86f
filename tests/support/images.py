"""Test images made on the fly: a real face, noise without a face, a small decompression bomb."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.data import photo


def face_jpeg() -> bytes:
    """The kit's astronaut portrait, a real face, as a JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(photo("astronaut")).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def noise_png(size: int = 96, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png() -> bytes:
    """Few bytes, many pixels: a small-scale decompression bomb."""
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
