"""Cheap checks of downloaded bytes before the engine decodes them: is it an image, how big.

Only the header is read, so a decompression bomb is refused before any pixel is allocated; and
only the openers the engine's decoder allows run on the bytes (worker/liveportrait/imageio.py).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from core.input_errors import InvalidImageError, TooLarge
from worker.liveportrait.imageio import (
    ACCEPTED_FORMATS,
    ACCEPTED_NAMES,
    format_name,
    openers_for,
    sniff_unsupported,
)

_NOT_SUPPORTED = f"image_url does not point at a supported image ({ACCEPTED_NAMES})"


def probe_image(data: bytes, *, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an image; raises InvalidImageError or TooLarge. The format is
    the name users know ("JPEG", "PNG", "WEBP", "HEIC", …)."""
    if not data:
        raise InvalidImageError("image_url points at an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=openers_for(data)) as image:
                width, height = image.size
                fmt = format_name(image)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image is too large to decode: {exc}") from exc
    except UnidentifiedImageError as exc:
        name = sniff_unsupported(data)
        if name is not None:
            raise InvalidImageError(f"{_NOT_SUPPORTED}: it is {name}") from exc
        raise InvalidImageError(_NOT_SUPPORTED) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Any other failure of an opener on these bytes (libheif raises its own kinds) is the
        # file's fault, never the worker's.
        raise InvalidImageError(_NOT_SUPPORTED) from exc
    if fmt not in ACCEPTED_FORMATS:
        raise InvalidImageError(f"{_NOT_SUPPORTED}: it is {fmt}")
    if width <= 0 or height <= 0:
        raise InvalidImageError("image has no pixels")
    if width * height > max_pixels:
        raise TooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    return fmt, width, height
