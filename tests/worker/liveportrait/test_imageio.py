"""Decoding untrusted uploads and encoding results."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.input_errors import InvalidImageError
from tests.support.images import heic
from worker.liveportrait.imageio import decode_image, encode_image

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _save(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but which carries no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _assert_rgb(arr: np.ndarray, h: int, w: int) -> None:
    assert arr.shape == (h, w, 3)
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous


# ---------------------------------------------------------------------------------------------
# round trips


def test_png_round_trip_is_exact() -> None:
    rgb = _noise(37, 53)
    data, ctype = encode_image(rgb, "png")
    assert ctype == "image/png" and data.startswith(b"\x89PNG")
    out = decode_image(data)
    _assert_rgb(out, 37, 53)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_round_trip_is_close() -> None:
    # Smooth content: JPEG at quality 95 should stay within a few grey levels.
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2, y * 3, (x + y)], axis=2).astype(np.uint8)
    data, ctype = encode_image(rgb, "jpeg")
    assert ctype == "image/jpeg" and data.startswith(b"\xff\xd8\xff")
    out = decode_image(data)
    _assert_rgb(out, 64, 96)
    assert np.abs(out.astype(int) - rgb).mean() < 2.0
    # Channel order survives (RGB in, RGB out).
    assert out[:, -1, 0].mean() > 150 and out[0, :, 1].mean() < 10


def test_jpeg_quality_changes_size() -> None:
    rgb = _noise(64, 64)
    small, _ = encode_image(rgb, "jpeg", jpeg_quality=30)
    large, _ = encode_image(rgb, "jpeg", jpeg_quality=95)
    assert len(small) < len(large)


def test_webp_decodes() -> None:
    rgb = _noise(20, 30)
    out = decode_image(_save(Image.fromarray(rgb), "WEBP", lossless=True))
    np.testing.assert_array_equal(out, rgb)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_image(np.zeros((10, 10), np.uint8), "png")
    with pytest.raises(ValueError):
        encode_image(np.zeros((10, 10, 3), np.float32), "png")
    with pytest.raises(ValueError):
        encode_image(np.zeros((10, 10, 3), np.uint8), "gif")  # type: ignore[arg-type]


def test_encode_accepts_non_contiguous_views() -> None:
    rgb = _noise(40, 40)[::2, ::-1]
    data, _ = encode_image(rgb, "png")
    np.testing.assert_array_equal(decode_image(data), rgb)


# ---------------------------------------------------------------------------------------------
# modes and metadata


def test_exif_orientation_is_applied() -> None:
    # Stored 40 wide x 20 high: red left half, blue right half. Orientation 6 means "rotate 90°
    # clockwise to display", so the picture is 20 wide x 40 high with red on top.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = RED
    stored[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(_save(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    _assert_rgb(out, 40, 20)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50
    assert out[34, 10, 2] > 200 and out[34, 10, 0] < 50


def test_exif_orientation_3_is_upside_down() -> None:
    stored = np.zeros((30, 30, 3), np.uint8)
    stored[:15] = RED
    exif = Image.Exif()
    exif[0x0112] = 3
    out = decode_image(_save(Image.fromarray(stored), "PNG", exif=exif))
    assert (out[20:] == RED).all() and (out[:10] == 0).all()


def test_rgba_alpha_is_dropped_not_composited() -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 0  # fully transparent: compositing on white or black would change the colour
    out = decode_image(_save(Image.fromarray(rgba), "PNG"))
    _assert_rgb(out, 20, 20)
    assert (out == (10, 20, 30)).all()
    out_webp = decode_image(_save(Image.fromarray(rgba), "WEBP", lossless=True, exact=True))
    assert (out_webp == (10, 20, 30)).all()


def test_grayscale() -> None:
    grey = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (18, 1))
    out = decode_image(_save(Image.fromarray(grey), "PNG"))
    _assert_rgb(out, 18, 24)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_grayscale_with_alpha() -> None:
    out = decode_image(_save(Image.new("LA", (20, 20), (100, 0)), "PNG"))
    assert (out == 100).all()


def test_cmyk_jpeg() -> None:
    out = decode_image(_save(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", quality=95))
    _assert_rgb(out, 32, 32)
    # Pure cyan ink is RGB (0, 255, 255).
    assert np.abs(out.astype(int) - (0, 255, 255)).max() <= 3


def test_16_bit_png_is_rescaled_not_clipped() -> None:
    wide = np.tile(np.array([0, 257 * 128, 65535, 1000, 257 * 200], dtype=np.uint16), (16, 4))
    img = Image.fromarray(wide)
    assert img.mode.startswith("I;16")
    out = decode_image(_save(img, "PNG"))
    _assert_rgb(out, 16, 20)
    # Full scale 65535 maps to 255: the factor is 257, not 256.
    np.testing.assert_array_equal(out[0, :5, 0], [0, 128, 255, 4, 200])
    assert (out[..., 0] == out[..., 2]).all()


def test_palette_png() -> None:
    idx = np.zeros((20, 20), np.uint8)
    idx[:, 10:] = 1
    img = Image.fromarray(idx).convert("P")
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    out = decode_image(_save(img, "PNG", transparency=0))
    assert (out[:, :10] == (10, 20, 30)).all()
    assert (out[:, 10:] == (200, 100, 50)).all()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    out = decode_image(data)
    assert (out == RED).all()


# ---------------------------------------------------------------------------------------------
# refusals


def _refused(data: bytes, match: str, **kwargs: Any) -> str:
    with pytest.raises(InvalidImageError, match=match) as info:
        decode_image(data, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_empty_bytes() -> None:
    _refused(b"", "empty")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated(fmt: str) -> None:
    data = _save(Image.fromarray(_noise(128, 128)), fmt)
    _refused(data[: len(data) // 2], "truncated or corrupt")
    _refused(data[:20], "truncated or corrupt")


def test_random_bytes() -> None:
    _refused(np.random.default_rng(0).bytes(4096), "not a JPEG, PNG, WebP or HEIC")


def test_gif_is_refused_by_name() -> None:
    message = _refused(_save(Image.new("RGB", (64, 64), RED), "GIF"), "unsupported image format 'GIF'")
    assert "JPEG, PNG, WebP or HEIC" in message


@pytest.mark.parametrize(("fmt", "name"), [("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_formats_are_refused_by_name(fmt: str, name: str) -> None:
    _refused(_save(Image.new("RGB", (64, 64), RED), fmt), f"unsupported image format '{name}'")


def test_too_many_pixels_refused_before_decoding() -> None:
    # The header claims 5000x5000 and there is no pixel data: the limit, not truncation, must fire.
    _refused(_png_header_only(5000, 5000), "limit", max_pixels=1_000_000)
    # A real image over a small limit.
    _refused(_save(Image.fromarray(_noise(100, 100)), "PNG"), "limit", max_pixels=9_999)
    assert decode_image(_save(Image.fromarray(_noise(100, 100)), "PNG"), max_pixels=10_000).shape == (
        100,
        100,
        3,
    )


def test_decompression_bomb_is_invalid_image() -> None:
    # Far beyond Pillow's own bomb limit: Pillow raises before our check; that too is our error.
    _refused(_png_header_only(100_000, 100_000), "too large", max_pixels=10**12)
    # Between Pillow's warning and error limits the warning must not let the image through.
    _refused(_png_header_only(10_000, 10_000), "too large", max_pixels=10**12)


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (15, 64), (64, 15)])
def test_tiny_images(size: tuple[int, int]) -> None:
    w, h = size
    _refused(_save(Image.new("RGB", (w, h), RED), "PNG"), "at least 16x16")


def test_16x16_is_accepted() -> None:
    out = decode_image(_save(Image.new("RGB", (16, 16), RED), "PNG"))
    _assert_rgb(out, 16, 16)


# ---------------------------------------------------------------------------------------------
# HEIC (lossy HEVC: compared within a tolerance)


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 60)], axis=2).astype(np.uint8)
    rgb[: h // 4, : w // 4] = RED  # a block whose place shows any turn or flip
    return rgb


def test_heic_decodes_close_to_its_source() -> None:
    rgb = _smooth(96, 128)
    out = decode_image(heic(rgb))
    _assert_rgb(out, 96, 128)
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    assert out[5, 5, 0] > 200 and out[5, 5, 2] < 50  # RGB, not BGR


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_heic_orientation_is_applied(orientation: int) -> None:
    import pillow_heif

    stored = _smooth(48, 80)
    data = heic(stored, orientation=orientation)
    exif = Image.Exif()
    exif.load(pillow_heif.open_heif(io.BytesIO(data)).info["exif"])
    assert exif[0x0112] == orientation  # the file says it, as a phone's does
    # The reference: the same pixels and tag as a PNG, through the JPEG/PNG path tested above.
    tags = Image.Exif()
    tags[0x0112] = orientation
    expected = decode_image(_save(Image.fromarray(stored), "PNG", exif=tags))
    out = decode_image(data)
    assert out.shape == expected.shape == ((48, 80, 3) if orientation == 3 else (80, 48, 3))
    assert np.abs(out.astype(int) - expected).mean() < 3.0  # turned once, never twice


@pytest.mark.parametrize("twelve_bit", [False, True])
def test_high_bit_depth_heic_becomes_8_bit(twelve_bit: bool) -> None:
    import pillow_heif

    wide = (_smooth(32, 48).astype(np.uint16) * 257).astype(np.uint16)
    buffer = io.BytesIO()
    pillow_heif.options.SAVE_HDR_TO_12_BIT = twelve_bit
    try:
        pillow_heif.from_bytes("RGB;16", (48, 32), wide.tobytes()).save(buffer, quality=-1, chroma=444)
    finally:
        pillow_heif.options.SAVE_HDR_TO_12_BIT = False
    depth = pillow_heif.open_heif(io.BytesIO(buffer.getvalue()), convert_hdr_to_8bit=False).info["bit_depth"]
    assert depth == (12 if twelve_bit else 10)
    out = decode_image(buffer.getvalue())
    _assert_rgb(out, 32, 48)
    assert np.abs(out.astype(int) - (wide >> 8)).max() <= 3


def test_heif_with_several_images_gives_the_primary() -> None:
    import pillow_heif

    buffer = io.BytesIO()
    first, primary = Image.new("RGB", (32, 32), RED), Image.new("RGB", (48, 40), BLUE)
    both = pillow_heif.from_pillow(first)
    both.add_from_pillow(primary)
    both.save(buffer, primary_index=1)
    assert pillow_heif.open_heif(io.BytesIO(buffer.getvalue())).primary_index == 1
    out = decode_image(buffer.getvalue())
    _assert_rgb(out, 40, 48)
    assert np.abs(out.astype(int) - BLUE).max() <= 4


def test_heic_alpha_is_dropped() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (40, 120, 200)
    out = decode_image(heic(Image.fromarray(rgba), quality=-1, chroma=444))
    _assert_rgb(out, 32, 32)
    assert np.abs(out.astype(int) - (40, 120, 200)).max() <= 3


def test_heic_truncated_or_corrupt() -> None:
    data = heic(_noise(64, 64))
    for end in (20, 200, len(data) // 2, len(data) - 1):
        _refused(data[:end], "truncated or corrupt")
    # Damage anywhere: a picture or InvalidImageError, never anything else (libheif's own
    # exceptions included).
    rng = np.random.default_rng(0)
    for _ in range(40):
        damaged = bytearray(data)
        damaged[int(rng.integers(0, len(data)))] ^= 0xFF
        try:
            assert decode_image(bytes(damaged)).ndim == 3
        except InvalidImageError as exc:
            assert "\n" not in str(exc)


def _with_ispe(data: bytes, width: int, height: int) -> bytes:
    """The HEIC with every image-size ('ispe') property claiming width x height."""
    out = bytearray(data)
    at = out.find(b"ispe")
    while at != -1:
        out[at + 8 : at + 16] = struct.pack(">II", width, height)  # after version and flags
        at = out.find(b"ispe", at + 4)
    return bytes(out)


def test_heic_pixel_limit_is_checked_on_the_header() -> None:
    data = heic(_noise(64, 64))
    # The header claims 5000x5000 over 64x64 pixels of data: the limit, not the decoder, speaks.
    _refused(_with_ispe(data, 5000, 5000), "limit", max_pixels=1_000_000)
    _refused(_with_ispe(data, 100_000, 100_000), "too large", max_pixels=10**12)
    _refused(data, "limit", max_pixels=4000)
    # Within the limit, a header that disagrees with the pixels is damage.
    _refused(_with_ispe(data, 32, 32), "truncated or corrupt")


@pytest.mark.parametrize("major", [b"avif", b"mif1"])
def test_avif_is_refused_by_name(major: bytes) -> None:
    # A generic major brand with AVIF's among the compatible ones is AVIF all the same.
    ftyp = struct.pack(">I", 28) + b"ftyp" + major + b"\x00" * 4 + b"avifmif1miaf"
    message = _refused(ftyp + bytes(200), "unsupported image format 'AVIF'")
    assert "HEIC" in message


def test_pillow_heif_is_loaded_only_for_heif_bytes() -> None:
    script = (
        "import io, sys\n"
        "from PIL import Image\n"
        "from worker.liveportrait.imageio import decode_image\n"
        "jpeg = io.BytesIO(); Image.new('RGB', (32, 32)).save(jpeg, 'JPEG'); decode_image(jpeg.getvalue())\n"
        "before = 'pillow_heif' in sys.modules\n"
        "decode_image(sys.stdin.buffer.read()); print(before, 'pillow_heif' in sys.modules)\n"
    )
    data = heic(Image.new("RGB", (32, 32)))
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", script], input=data, cwd=root, capture_output=True, check=True
    )
    assert done.stdout.split() == [b"False", b"True"]
