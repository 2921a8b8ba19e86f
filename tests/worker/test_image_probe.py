"""Image probing: format and size from the header, refused before decoding."""

from __future__ import annotations

import pytest

from core.input_errors import InvalidImageError as NotAnImage
from core.input_errors import TooLarge
from tests.support.images import huge_png, noise_png
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
