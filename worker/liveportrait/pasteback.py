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
def mask_template(size: int = NETWORK_OUTPUT_SIZE) -> np.ndarray:
    """The paste-back mask as (size, size, 3) uint8, read-only (shared between calls)."""
    if size <= 0:
        raise ValueError(f"mask size must be positive, got {size}")
    grey = _official_mask()
    if size != NETWORK_OUTPUT_SIZE:
        interp = cv2.INTER_AREA if size < NETWORK_OUTPUT_SIZE else cv2.INTER_LINEAR
        grey = cv2.resize(grey, (size, size), interpolation=interp)
    mask = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    mask.setflags(write=False)
    return mask


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


def paste_back(
    crop_out: np.ndarray, M_c2o: np.ndarray, original: np.ndarray, *, crop_size: int
) -> np.ndarray:
    """Warp the network's square output back into `original` and blend it with the soft mask.

    `M_c2o` maps the coordinates of a crop_size x crop_size crop to the original image; the
    network output (normally 512²) is rescaled onto that crop first. Output has the original's size.
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

    result = original.copy()
    win = _window(m, n, width, height)
    if win is None:
        return result
    # The warps run on the full frame, as the official code does: cv2 computes sampling positions
    # in reduced precision relative to the output origin, so warping only a sub-window would move
    # a few pixels by one grey level.
    mask = cv2.warpAffine(
        mask_template(n),
        m[:2],
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    face = cv2.warpAffine(
        crop_out,
        m[:2],
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    # The float blend is limited to the window: outside it the mask is exactly 0 and the blend
    # would return the original unchanged, while full-frame float32 buffers cost GBs on big photos.
    x0, y0, x1, y1 = win
    alpha = mask[y0:y1, x0:x1].astype(np.float32) / np.float32(255.0)
    blended = alpha * face[y0:y1, x0:x1] + (np.float32(1.0) - alpha) * original[y0:y1, x0:x1]
    # Truncation to uint8 after clipping, as the official blend.
    result[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)
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
