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


def heic(
    image: Image.Image | np.ndarray, *, orientation: int = 1, quality: int = 90, **options: object
) -> bytes:
    """`image` as a HEIC file, made here with pillow-heif's HEVC encoder (x265, in its wheels).
    An `orientation` other than 1 goes into the file's EXIF, and pillow-heif writes the matching
    irot/imir transform too, as phone cameras do: the pixels are stored as given, turned on display."""
    import pillow_heif

    if not pillow_heif.libheif_info()["HEIF"]:
        # pillow-heif built from source against a system libheif may lack x265; its wheels have it.
        raise RuntimeError("this libheif cannot encode HEIC: pip install --only-binary=:all: pillow-heif")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    exif = None
    if orientation != 1:
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = tags.tobytes()
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=quality, exif=exif, **options)
    return buffer.getvalue()
