"""Image probing: format and size from the header, refused before decoding."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from core.input_errors import InvalidImageError as NotAnImage
from core.input_errors import TooLarge
from tests.support.images import heic, huge_png, noise_png
from worker.image_probe import probe_image


def test_probe_image() -> None:
    assert probe_image(noise_png(20), max_pixels=1000)[1:] == (20, 20)
    with pytest.raises(NotAnImage):
        probe_image(b"<html>nope</html>", max_pixels=1000)
    with pytest.raises(NotAnImage):
        probe_image(b"", max_pixels=1000)
    with pytest.raises(TooLarge):
        probe_image(noise_png(40), max_pixels=1000)
    # 9 Mpx of zeros compress to a few KB; only the header is read to refuse them.
    with pytest.raises(TooLarge):
        probe_image(huge_png(), max_pixels=4_000_000)


def test_heic_is_named_and_sized_upright() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    assert probe_image(heic(pixels), max_pixels=10_000) == ("HEIC", 64, 40)
    # Stored 64 wide, shown 40 wide: the size the decoder will give, turn applied.
    assert probe_image(heic(pixels, orientation=6), max_pixels=10_000) == ("HEIC", 40, 64)
    with pytest.raises(TooLarge, match="64x40"):
        probe_image(heic(pixels), max_pixels=2000)
    data = heic(pixels)
    with pytest.raises(NotAnImage, match="HEIC"):
        probe_image(data[:20], max_pixels=10_000)


def test_only_the_decoders_formats_pass() -> None:
    gif = io.BytesIO()
    Image.new("RGB", (32, 32)).save(gif, format="GIF")
    with pytest.raises(NotAnImage, match="supported image .*: it is GIF"):
        probe_image(gif.getvalue(), max_pixels=10_000)
    avif = struct.pack(">I", 24) + b"ftypavif" + bytes(4) + b"mif1miaf" + bytes(100)
    with pytest.raises(NotAnImage, match="it is AVIF"):
        probe_image(avif, max_pixels=10_000)
