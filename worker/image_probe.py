"""Cheap checks of downloaded bytes before the engine decodes them: is it an image, how big.

Only the header is read, so a decompression bomb is refused before any pixel is allocated.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from core.input_errors import InvalidImageError, TooLarge


def probe_image(data: bytes, *, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an image; raises InvalidImageError or TooLarge."""
    if not data:
        raise InvalidImageError("image_url points at an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                fmt = image.format or "unknown"
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image is too large to decode: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError("image_url does not point at a supported image (JPEG, PNG, WebP …)") from exc
    if width <= 0 or height <= 0:
        raise InvalidImageError("image has no pixels")
    if width * height > max_pixels:
        raise TooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    return fmt, width, height
