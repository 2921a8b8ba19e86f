"""Decoding untrusted upload bytes into RGB arrays, and encoding results.

Only JPEG, PNG, WebP and HEIC/HEIF are accepted. Every failure caused by the bytes themselves
surfaces as `InvalidImageError` with a one-line message; programming errors (wrong array shapes)
are ValueError.
"""

from __future__ import annotations

import io
import threading
import warnings
from typing import Literal

import numpy as np
from PIL import (
    Image,
    ImageOps,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from core.input_errors import InvalidImageError

MIN_SIDE = 16
_ORIENTATION = 0x0112  # the EXIF tag
DEFAULT_MAX_PIXELS = 40_000_000

# The only openers Pillow may run on upload bytes. HEIF (pillow-heif, on libheif) joins them only
# for bytes whose ftyp box says HEIF, so that a process that never sees one never loads libheif.
_OPENERS = ("JPEG", "PNG", "WEBP")
_HEIF_OPENER = "HEIF"
# Pillow's JPEG opener turns multi-picture JPEGs (common from phone cameras) into "MPO"; they are
# JPEG files as far as the user is concerned.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "HEIC", "HEIF")
# Image.open(formats=...) only knows plugins that are already registered, and Pillow registers
# WebP and MPO lazily; importing the plugins registers them.
_PLUGINS = (JpegImagePlugin, MpoImagePlugin, PngImagePlugin, WebPImagePlugin)
ACCEPTED_NAMES = "JPEG, PNG, WebP or HEIC"

# The ftyp brands pillow-heif's opener takes (HEVC-coded HEIF: stills, sequences, and the generic
# mif1/msf1). AVIF files may carry a generic major brand too; their compatible brands tell.
_HEVC_BRANDS = frozenset((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"))
_GENERIC_BRANDS = frozenset((b"mif1", b"msf1"))
_HEIF_BRANDS = _HEVC_BRANDS | _GENERIC_BRANDS
_AVIF_BRANDS = frozenset((b"avif", b"avis"))
_AVIF_MIMETYPES = ("image/avif", "image/avif-sequence")

_heif_lock = threading.Lock()
_heif_registered = False

# Enough magic numbers to name what the user sent when it is not one of the accepted formats,
# without letting every Pillow plugin parse the bytes.
_MAGIC_NAMES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"qoif", "QOI"),
)


def _register_heif() -> None:
    """pillow-heif's Pillow opener, registered once per process, on first need (importing it and
    libheif costs ~15 ms and memory that JPEG-only processes need not pay)."""
    global _heif_registered
    with _heif_lock:
        if _heif_registered:
            return
        from pillow_heif import register_heif_opener

        # Thumbnails, depth maps and auxiliary images are never used: leave them unparsed, and
        # keep Pillow's draft() from swapping in a thumbnail.
        register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        _heif_registered = True


def _ftyp_brands(data: bytes) -> tuple[bytes, frozenset[bytes]] | None:
    """The major and compatible brands of an ISO-BMFF file's leading ftyp box; None if it has none."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(data[:4], "big"), len(data), 16 + 4 * 64)  # bounded: a header, not a scan
    return data[8:12], frozenset(data[i : i + 4] for i in range(16, end - 3, 4))


def _is_avif(brands: tuple[bytes, frozenset[bytes]]) -> bool:
    major, compatible = brands
    if major in _AVIF_BRANDS:
        return True
    return major in _GENERIC_BRANDS and bool(compatible & _AVIF_BRANDS) and not compatible & _HEVC_BRANDS


def _looks_heif(data: bytes) -> bool:
    brands = _ftyp_brands(data)
    return brands is not None and brands[0] in _HEIF_BRANDS and not _is_avif(brands)


def openers_for(data: bytes) -> tuple[str, ...]:
    """The Pillow openers that may run on these bytes (registering pillow-heif's when needed).
    AVIF stays with the refused formats: libheif would parse it, and this build cannot decode it."""
    if not _looks_heif(data):
        return _OPENERS
    _register_heif()
    return (*_OPENERS, _HEIF_OPENER)


def format_name(img: Image.Image) -> str:
    """The format as users know it: Pillow calls every HEIF file "HEIF", whatever its codec."""
    if img.format != _HEIF_OPENER:
        return img.format or "unknown"
    mimetype = getattr(img, "custom_mimetype", None) or ""
    if mimetype in _AVIF_MIMETYPES:
        return "AVIF"
    return "HEIC" if mimetype.startswith("image/heic") else "HEIF"


def _looks_accepted(data: bytes) -> bool:
    return (
        data.startswith(b"\xff\xd8\xff")
        or data.startswith(b"\x89PNG\r\n\x1a\n")
        or (data.startswith(b"RIFF") and data[8:12] == b"WEBP")
        or _looks_heif(data)
    )


def sniff_unsupported(data: bytes) -> str | None:
    """The name of a refused format these bytes start like, if one is known."""
    for magic, name in _MAGIC_NAMES:
        if data.startswith(magic):
            return name
    brands = _ftyp_brands(data)
    if brands is not None and _is_avif(brands):
        return "AVIF"
    if data.lstrip()[:5].lower() in (b"<?xml", b"<svg "):
        return "SVG"
    return None


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale PNGs: Pillow's own conversion clips at 255 instead of rescaling.
        wide = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode == "RGBa":
        # Premultiplied colour would be darkened by just dropping alpha.
        img = img.convert("RGBA")
    # RGBA/LA/PA → RGB discards alpha without compositing; P, L, 1 and CMYK expand to RGB.
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/WebP/HEIC bytes to an HxWx3 uint8 RGB array (C-contiguous), upright."""
    if not data:
        raise InvalidImageError("image data is empty")
    try:
        # Warnings become errors so that Pillow's own decompression-bomb warning cannot slip
        # through when a caller raises max_pixels beyond Pillow's limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=openers_for(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        if _looks_accepted(data):
            # Right signature but Pillow could not read the header: cut short or damaged.
            raise InvalidImageError("image data is truncated or corrupt") from exc
        name = sniff_unsupported(data)
        if name is not None:
            raise InvalidImageError(f"unsupported image format '{name}'; use {ACCEPTED_NAMES}") from exc
        raise InvalidImageError(f"image data is not a {ACCEPTED_NAMES} image") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidImageError("image data is truncated or corrupt") from exc

    with img:
        name = format_name(img)
        if name not in ACCEPTED_FORMATS:
            raise InvalidImageError(f"unsupported image format '{name}'; use {ACCEPTED_NAMES}")
        width, height = img.size
        # Checked on the header's size, before any pixel data is decompressed.
        if width * height > max_pixels:
            raise InvalidImageError(
                f"image is {width}x{height} ({width * height} pixels); the limit is {max_pixels} pixels"
            )
        if width < MIN_SIDE or height < MIN_SIDE:
            raise InvalidImageError(
                f"image is {width}x{height}; it must be at least {MIN_SIDE}x{MIN_SIDE} pixels"
            )
        try:
            # Animated WebP/APNG and MPO open on frame 0; make that explicit, load only it. A HEIF
            # file opens on its primary image, which need not be its first: that is the one.
            if img.format != _HEIF_OPENER:
                img.seek(0)
            img.load()
            if img.size != (width, height):
                # libheif takes the size from the codec stream at decode time; one that disagrees
                # with the header that passed the pixel limit is refused, not used.
                raise InvalidImageError("image data is truncated or corrupt")
            try:
                # HEIF: libheif has already applied the file's rotation and mirroring (irot/imir,
                # which phones write to match the EXIF orientation), and pillow-heif resets the
                # EXIF tag to 1, so this cannot turn the picture twice.
                orientation = img.getexif().get(_ORIENTATION, 1)
                # exif_transpose copies even an upright image: 50 ms of a 12 MP decode.
                upright = ImageOps.exif_transpose(img) if orientation in range(2, 9) else img
            except MemoryError:
                raise
            except Exception:
                # A malformed EXIF block should not cost the user their image; keep it as stored.
                upright = img
            rgb = _to_rgb(upright)
        except MemoryError:
            raise
        except Exception as exc:
            raise InvalidImageError("image data is truncated or corrupt") from exc

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImageError("image data is truncated or corrupt")
    return np.ascontiguousarray(rgb)


def encode_image(
    rgb: np.ndarray, fmt: Literal["jpeg", "png"], *, jpeg_quality: int = 95
) -> tuple[bytes, str]:
    """Encode an HxWx3 uint8 RGB array; returns the bytes and their content type."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
    img = Image.fromarray(np.ascontiguousarray(rgb))
    buf = io.BytesIO()
    if fmt == "jpeg":
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        img.save(buf, format="JPEG", quality=jpeg_quality)
        return buf.getvalue(), "image/jpeg"
    if fmt == "png":
        # zlib level 1: a 512x512 portrait encodes in 21 ms instead of 74 ms at PIL's default (6)
        # for a file about 10% larger; the encode sits on every request's path to its result.
        img.save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "image/png"
    raise ValueError(f"unsupported output format {fmt!r}; use 'jpeg' or 'png'")
