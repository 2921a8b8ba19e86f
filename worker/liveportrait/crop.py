"""Face crop geometry (liveportrait-spec.md §4.2–4.4) and the network's input tensor.

Transforms are 3x3 float64 matrices acting on (x, y, 1) column vectors in pixel-index coordinates,
the convention cv2.warpAffine uses. `M_o2c` maps original-image points into the crop, `M_c2o` back.
"""

from __future__ import annotations

import cv2
import numpy as np

NETWORK_INPUT_SIZE = 256

# Below this eye→mouth distance the direction is noise; the official code falls back to upright.
_MIN_AXIS_LENGTH = 1e-3


def _mean(pts: np.ndarray, idx: list[int]) -> np.ndarray:
    return pts[idx].mean(axis=0)


def pt2_from_landmarks(pts: np.ndarray) -> np.ndarray:
    """The (eye centre, mouth centre) pair, as a (2, 2) float64 array, for a known landmark layout."""
    pts = _as_points(pts)
    n = pts.shape[0]
    if n == 5:
        # left eye, right eye, nose tip, left mouth corner, right mouth corner
        eye = _mean(pts, [0, 1])
        mouth = _mean(pts, [3, 4])
    elif n == 68:
        # dlib / iBUG, 0-based: eye corners 36/39 and 42/45, mouth corners 48/54
        eye = (_mean(pts, [36, 39]) + _mean(pts, [42, 45])) / 2.0
        mouth = _mean(pts, [48, 54])
    elif n == 101:
        eye = (_mean(pts, [39, 42, 45, 48]) + _mean(pts, [51, 54, 57, 60])) / 2.0
        mouth = _mean(pts, [75, 81])
    elif n == 106:
        # InsightFace 2d106det: two corners and two lid points per eye; mouth corners 52/61
        eye = (_mean(pts, [33, 35, 40, 39]) + _mean(pts, [87, 89, 94, 93])) / 2.0
        mouth = _mean(pts, [52, 61])
    elif n == 203:
        eye = (_mean(pts, [0, 6, 12, 18]) + _mean(pts, [24, 30, 36, 42])) / 2.0
        mouth = _mean(pts, [48, 66])
    else:
        # The official code would silently read any other count as a 101-point layout, which is
        # wrong for e.g. MediaPipe's 468/478 points; refusing is safer.
        raise ValueError(f"unsupported landmark count {n}; expected 5, 68, 101, 106 or 203 points")
    return np.stack([eye, mouth])


def _as_points(pts: np.ndarray) -> np.ndarray:
    # float32 stays float32: the official crop computes the eye and mouth centres in it.
    arr = np.asarray(pts)
    arr = arr if arr.dtype == np.float32 else arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"landmarks must have shape (N, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("landmarks contain NaN or infinite values")
    return arr


def crop_transform(
    pts: np.ndarray,
    *,
    dsize: int = 512,
    scale: float = 2.3,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.125,
    flag_do_rot: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity transform of the official face crop; returns (M_o2c, M_c2o), both 3x3 float64
    holding the official float32 values (see `official_crop_matrices`).

    Unlike the official `crop_image`, `vx_ratio` is honoured; at vx_ratio == 0 the two agree.
    """
    m_o2c, m_c2o = official_crop_matrices(
        pts, dsize=dsize, scale=scale, vx_ratio=vx_ratio, vy_ratio=vy_ratio, flag_do_rot=flag_do_rot
    )
    return m_o2c.astype(np.float64), m_c2o.astype(np.float64)


def official_crop_matrices(
    pts: np.ndarray,
    *,
    dsize: int,
    scale: float,
    vx_ratio: float = 0.0,
    vy_ratio: float,
    flag_do_rot: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(M_o2c, M_c2o) as 3x3 float32, computed as the official code computes them: the face frame,
    box and centre in float32, the matrix entries in float64 rounded to float32 (the official
    code ran on numpy 1.x, whose scalar arithmetic widened to float64 there), and the inverse in
    float32. Crops and the 203 points then agree with the official ones bit for bit."""
    if dsize <= 0:
        raise ValueError(f"dsize must be positive, got {dsize}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    pts = _as_points(pts).astype(np.float32)
    pt2 = pt2_from_landmarks(pts)

    uy = pt2[1] - pt2[0]  # eye -> mouth: "down" in the face's own frame
    length = np.linalg.norm(uy)
    uy = np.array([0.0, 1.0], dtype=np.float32) if length <= _MIN_AXIS_LENGTH else uy / length
    ux = np.array([uy[1], -uy[0]], dtype=np.float32)  # the face's "right"
    angle = float(np.arccos(np.float64(ux[0])))
    if ux[1] < 0:
        angle = -angle

    # Box extents are measured in the face-aligned frame even when the crop is not rotated.
    centre0 = pts.mean(axis=0)
    local = (pts - centre0) @ np.stack([ux, uy]).T
    lo, hi = local.min(axis=0), local.max(axis=0)
    mid = (lo + hi) / np.float32(2)
    side = np.float32(np.max(hi - lo)) * np.float32(scale)
    if not side > 0:
        raise ValueError("landmarks have zero extent; cannot size the crop")
    centre = centre0 + ux * mid[0] + uy * mid[1]
    centre = centre + ux * np.float32(vx_ratio * side) + uy * np.float32(vy_ratio * side)

    s = dsize / float(side)
    c, n = (np.cos(angle), np.sin(angle)) if flag_do_rot else (1.0, 0.0)
    half = dsize / 2.0
    cx, cy = float(centre[0]), float(centre[1])
    m_o2c = np.array(
        [
            [s * c, s * n, half - s * (c * cx + n * cy)],
            [-s * n, s * c, half - s * (-n * cx + c * cy)],
            [0.0, 0.0, 1.0],
        ],
        dtype=np.float64,
    ).astype(np.float32)
    return m_o2c, np.linalg.inv(m_o2c)


# The official image path loads every source with this limit (`resize_to_limit(max_dim=1280,
# division=2)`): the long side is reduced to 1,280 px and odd sizes lose their last row or column.
INPUT_MAX_SIDE = 1280
INPUT_DIVISION = 2


def limit_input(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image the official pipeline detects, crops and feeds from, and the 3x3 matrix from its
    pixel coordinates to `rgb`'s (identity when nothing changed)."""
    height, width = rgb.shape[:2]
    to_input = np.eye(3)
    if max(height, width) > INPUT_MAX_SIDE:
        # The official arithmetic: the long side becomes the limit, the other is truncated.
        if height > width:
            new_h, new_w = INPUT_MAX_SIDE, int(width * (INPUT_MAX_SIDE / height))
        else:
            new_w, new_h = INPUT_MAX_SIDE, int(height * (INPUT_MAX_SIDE / width))
        # cv2.resize's default (bilinear), as the official loader calls it.
        rgb = cv2.resize(rgb, (new_w, new_h))
        sx, sy = width / new_w, height / new_h
        # cv2.resize samples the centre of output pixel i at input (i + 0.5) * s - 0.5.
        to_input = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    h2 = rgb.shape[0] - rgb.shape[0] % INPUT_DIVISION
    w2 = rgb.shape[1] - rgb.shape[1] % INPUT_DIVISION
    if h2 > 0 and w2 > 0 and (h2, w2) != rgb.shape[:2]:
        # Dropping the last row/column keeps every other pixel where it was.
        rgb = rgb[:h2, :w2]
    return np.ascontiguousarray(rgb), to_input


def whole_image_input(rgb: np.ndarray) -> np.ndarray:
    """flag_do_crop=false: the network input is the whole (limited) image resized to 256x256 with
    cv2's default bilinear interpolation, as the official `prepare_source` does; no crop, no stretch
    onto dsize first."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got {rgb.shape}")
    if rgb.shape[:2] != (NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE):
        rgb = cv2.resize(rgb, (NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE))
    x = np.clip(rgb.astype(np.float32) / np.float32(255.0), 0.0, 1.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def warp_crop(rgb: np.ndarray, M_o2c: np.ndarray, dsize: int) -> np.ndarray:
    """The dsize x dsize crop: bilinear, black outside the image (as the official crop)."""
    return cv2.warpAffine(
        rgb,
        np.asarray(M_o2c, dtype=np.float64)[:2],
        (dsize, dsize),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def network_input(crop: np.ndarray) -> np.ndarray:
    """(1, 3, 256, 256) float32 in [0, 1], RGB, no mean/std: what F and M consume."""
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 crop, got {crop.shape}")
    if crop.shape[:2] != (NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE):
        crop = cv2.resize(crop, (NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE), interpolation=cv2.INTER_AREA)
    x = np.clip(crop.astype(np.float32) / np.float32(255.0), 0.0, 1.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
