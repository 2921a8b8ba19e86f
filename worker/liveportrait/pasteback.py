"""Blending the edited face crop back into the original image (liveportrait-spec.md §5)."""

from __future__ import annotations

import functools

import cv2
import numpy as np

NETWORK_OUTPUT_SIZE = 512

# Geometry of the official mask_template.png: 255 on the pixel-index square [16, 496], then a 16 px
# linear ramp to 0. The square is not centred, hence 0 at the left/top edge but 15 at right/bottom.
_MASK_INNER_LO = 16
_MASK_INNER_HI = 496
_MASK_RAMP = 16.0


def _official_mask() -> np.ndarray:
    idx = np.arange(NETWORK_OUTPUT_SIZE, dtype=np.float64)
    # Per-axis distance outside the inner square (0 inside it).
    d1 = np.maximum(np.maximum(_MASK_INNER_LO - idx, idx - _MASK_INNER_HI), 0.0)
    dist = np.hypot(d1[:, None], d1[None, :])
    value = np.floor(255.0 * (1.0 - dist / _MASK_RAMP))
    return np.clip(value, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _mask_grey(size: int) -> np.ndarray:
    if size <= 0:
        raise ValueError(f"mask size must be positive, got {size}")
    grey = _official_mask()
    if size != NETWORK_OUTPUT_SIZE:
        interp = cv2.INTER_AREA if size < NETWORK_OUTPUT_SIZE else cv2.INTER_LINEAR
        grey = cv2.resize(grey, (size, size), interpolation=interp)
    grey.setflags(write=False)
    return grey


@functools.lru_cache(maxsize=8)
def mask_template(size: int = NETWORK_OUTPUT_SIZE) -> np.ndarray:
    """The paste-back mask as (size, size, 3) uint8, read-only (shared between calls)."""
    mask = np.ascontiguousarray(np.repeat(_mask_grey(size)[:, :, None], 3, axis=2))
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=8)
def _opaque_square(size: int) -> tuple[int, int] | None:
    """The template's square [lo, hi]^2 of pixels that are all 255, if any."""
    grey = _mask_grey(size)
    row = np.flatnonzero(grey[size // 2] == 255)
    if row.size == 0:
        return None
    lo, hi = int(row[0]), int(row[-1])
    if hi - lo + 1 != row.size or not (grey[lo : hi + 1, lo : hi + 1] == 255).all():
        return None
    return lo, hi


def _window(m_c2o: np.ndarray, n: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), in the original image, of all pixels the warped crop reaches."""
    # Pixel centres span [0, n-1]; bilinear sampling reaches one more pixel, so use [-1, n].
    corners = np.array([[-1.0, -1.0, 1.0], [n, -1.0, 1.0], [-1.0, n, 1.0], [n, n, 1.0]]).T
    xy = (m_c2o[:2] @ corners).T
    # A margin of 2 px absorbs cv2's fixed-point rounding of the sampling positions.
    x0 = max(int(np.floor(xy[:, 0].min())) - 2, 0)
    y0 = max(int(np.floor(xy[:, 1].min())) - 2, 0)
    x1 = min(int(np.ceil(xy[:, 0].max())) + 3, width)
    y1 = min(int(np.ceil(xy[:, 1].max())) + 3, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


# cv2 4.x's bilinear warp samples at positions rounded to 1/32 px from 1/1024 px fixed point,
# i.e. within 1/64 + 1/1024 px of the exact ones: a pixel whose exact source position is further
# than this from a square's edge reads only pixels on its own side of that edge.
_SAMPLE_SLACK = 0.05


def _spans(inv: np.ndarray, rows: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Per output row, the columns [start, stop) whose exact source position lies in [lo, hi]^2
    (`inv` maps output pixels to source positions); float arrays, empty where start >= stop."""
    start = np.full(rows.shape, -np.inf)
    stop = np.full(rows.shape, np.inf)
    for axis in (0, 1):
        slope = inv[axis, 0]
        offset = inv[axis, 1] * rows + inv[axis, 2]
        if slope == 0.0:
            inside = (offset >= lo) & (offset <= hi)
            start = np.where(inside, start, np.inf)
            continue
        a, b = (lo - offset) / slope, (hi - offset) / slope
        start = np.maximum(start, np.minimum(a, b))
        stop = np.minimum(stop, np.maximum(a, b))
    return np.ceil(start), np.floor(stop) + 1


def _runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges [start, start + length) as one int64 array."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if ends.size else 0) + np.repeat(starts - (ends - lengths), lengths)


def _band(inv: np.ndarray, n: int, win: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row within the window, column) of every pixel whose mask value may lie strictly between
    0 and 255: all the window's pixels but those certainly outside the crop and those certainly
    inside the template's opaque square. A superset: the float blend is exact for 0 and 255 too."""
    x0, y0, x1, y1 = win
    rows = np.arange(y0, y1, dtype=np.float64)
    # Outside [-1, n]^2 every neighbour a bilinear sample reads is the zero border.
    outer_start, outer_stop = _spans(inv, rows, -1.0 - _SAMPLE_SLACK, n + _SAMPLE_SLACK)
    first = np.clip(outer_start, x0, x1).astype(np.int64)
    last = np.maximum(np.clip(outer_stop, x0, x1).astype(np.int64), first)
    square = _opaque_square(n)
    if square is None:
        cut_start, cut_stop = last, last
    else:
        # A sample at a position in [lo, hi) reads only pixels of the opaque square [lo, hi].
        inner_start, inner_stop = _spans(inv, rows, square[0] + _SAMPLE_SLACK, square[1] - _SAMPLE_SLACK)
        cut_start = np.clip(inner_start, first, last).astype(np.int64)
        cut_stop = np.clip(inner_stop, first, last).astype(np.int64)
        empty = cut_start >= cut_stop
        cut_start = np.where(empty, last, cut_start)
        cut_stop = np.where(empty, last, cut_stop)
    row_index = np.arange(y1 - y0, dtype=np.int64)
    lengths = np.concatenate([cut_start - first, last - cut_stop])
    starts = np.concatenate([first, cut_stop])
    band_rows = np.repeat(np.concatenate([row_index, row_index]), lengths)
    return band_rows, _runs(starts, lengths)


def paste_back(
    crop_out: np.ndarray,
    M_c2o: np.ndarray,
    original: np.ndarray,
    *,
    crop_size: int,
    in_place: bool = False,
) -> np.ndarray:
    """Warp the network's square output back into `original` and blend it with the soft mask.

    `M_c2o` maps the coordinates of a crop_size x crop_size crop to the original image; the
    network output (normally 512²) is rescaled onto that crop first. Output has the original's
    size, and is byte for byte the official full-frame warp and blend. With `in_place` the result
    is written into `original` (when C-contiguous and writeable) and returned, saving a full-frame
    copy.
    """
    if crop_out.dtype != np.uint8 or crop_out.ndim != 3 or crop_out.shape[2] != 3:
        raise ValueError(f"crop_out must be an NxNx3 uint8 array, got {crop_out.dtype} {crop_out.shape}")
    n = crop_out.shape[0]
    if crop_out.shape[1] != n:
        raise ValueError(f"crop_out must be square, got {crop_out.shape}")
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"original must be an HxWx3 uint8 array, got {original.dtype} {original.shape}")
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")

    height, width = original.shape[:2]
    k = crop_size / n
    m = np.asarray(M_c2o, dtype=np.float64) @ np.diag([k, k, 1.0])

    writable = original.flags.c_contiguous and original.flags.writeable
    result = original if in_place and writable else original.copy()
    win = _window(m, n, width, height)
    if win is None:
        return result
    x0, y0, x1, y1 = win
    # cv2.warpAffine inverts a forward matrix with exactly this function.
    inv = cv2.invertAffineTransform(m[:2])
    # Only rows y0..y1 and columns 0..x1 are warped; that equals the full-frame warp byte for byte
    # (tests/worker/liveportrait/test_pasteback.py). cv2 4.x rounds a pixel's source position to
    # 1/1024 px as two terms, one per output row and one per column, before the 1/32 px grid: an
    # origin moved down by whole rows stays in the row term and changes nothing, but one moved
    # right carries part of the column term into the row term, and the two roundings then differ
    # by 1/1024 px at some pixels, which cross a 1/32 px step: up to 9 grey levels on the kit's
    # decoded face (1.5 % of its values) in 200 random matrices.
    strip = inv.copy()
    strip[:, 2] += inv[:, 1] * y0
    size = (x1, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    # One channel: the template's three are equal, and each is warped alike.
    mask = cv2.warpAffine(
        _mask_grey(n), strip, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    face = cv2.warpAffine(
        crop_out, strip, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )

    # The official blend is a float32 one over the whole frame; where the mask is 0 it returns the
    # original and where it is 255 the face, exactly, so only the band between needs the floats.
    band_rows, band_cols = _band(inv, n, win)
    if band_cols.size:
        at_strip = band_rows * x1 + band_cols
        at_result = (band_rows + y0) * width + band_cols
        alpha = mask.reshape(-1).take(at_strip).astype(np.float32)[:, None] / np.float32(255.0)
        pixels = result.reshape(-1, 3)
        blended = alpha * face.reshape(-1, 3).take(at_strip, axis=0) + (
            np.float32(1.0) - alpha
        ) * pixels.take(at_result, axis=0)
        # Truncation to uint8 after clipping, as the official blend.
        pixels[at_result] = np.clip(blended, 0, 255).astype(np.uint8)
    opaque = cv2.inRange(mask[:, x0:], 255, 255)
    cv2.copyTo(face[:, x0:], opaque, result[y0:y1, x0:x1])
    return result


def resize_crop(crop_out: np.ndarray, crop_size: int) -> np.ndarray:
    """The edited crop alone (flag_pasteback=false) at crop_size x crop_size."""
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    n = crop_out.shape[0]
    if crop_out.shape[:2] == (crop_size, crop_size):
        return crop_out.copy()
    interp = cv2.INTER_AREA if crop_size < n else cv2.INTER_CUBIC
    return cv2.resize(crop_out, (crop_size, crop_size), interpolation=interp)
