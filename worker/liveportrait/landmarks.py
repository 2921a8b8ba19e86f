"""The two landmark networks of the official face pipeline and the ratios read from them
(shared/face-kit README: "2d106det.onnx", "liveportrait/landmark.onnx", "The crop and the ratios").

- InsightFace's 106 points, from a 192x192 crop around a detection box: they drive the crop.
- LivePortrait's 203 points, from a rotated 224x224 crop around the 106 points: they give the
  lip and eye ratios (lip zero).

Matrices and points are float32 where the official code keeps them so; the crops are OpenCV 4.x
bilinear warps, which is what makes the points agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

LMK106_SIZE = 192
LMK203_SIZE = 224
# The 203-point crop: looser than the source crop (2.3) and centred a little higher.
LMK203_SCALE = 1.5
LMK203_VY_RATIO = -0.1

Trace = dict[str, Any] | None
# One network call: the float32 NCHW input in, the outputs in the file's order out.
LandmarkNet = Callable[[np.ndarray], list[np.ndarray]]


def _warp(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(
        rgb, np.asarray(m)[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def box_crop_matrix(box: np.ndarray, size: int = LMK106_SIZE) -> np.ndarray:
    """(2, 3) float64: the square around the box, 1.5 times its longer side, onto size x size.

    The box and its centre are float32, the scale and the matrix float64 (numpy 1.x widened the
    official code's scalar arithmetic; the kit's matrices show no float32 rounding there)."""
    x1, y1, x2, y2 = (np.float32(v) for v in box[:4])
    w, h = x2 - x1, y2 - y1
    cx, cy = (x2 + x1) / np.float32(2), (y2 + y1) / np.float32(2)
    s = size / (float(max(w, h)) * 1.5)
    tx, ty = float(cx) * s, float(cy) * s
    half = size / 2
    return np.array([[s, 0.0, half - tx], [0.0, s, half - ty]], dtype=np.float64)


def landmarks106(rgb: np.ndarray, box: np.ndarray, net: LandmarkNet, trace: Trace = None) -> np.ndarray:
    """(106, 2) float32 points in `rgb`'s pixel coordinates for the face in `box`."""
    m = box_crop_matrix(box)
    crop = _warp(rgb, m, LMK106_SIZE)
    # This file takes raw 0..255 values (InsightFace picks mean 0, std 1 for it), RGB.
    x = np.ascontiguousarray(crop.astype(np.float32).transpose(2, 0, 1)[None])
    raw = np.asarray(net(x)[0], dtype=np.float32).reshape(-1)
    pts = raw.reshape(-1, 2)[-106:] + np.float32(1.0)
    pts = pts * np.float32(LMK106_SIZE // 2)
    back = cv2.invertAffineTransform(m)
    mapped = _affine_points(back, pts)
    if trace is not None:
        trace.update(lmk106_M=m, lmk106_input=crop, lmk106_raw=raw, lmk106=mapped)
    return mapped


def _affine_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points through a (2, 3) float64 matrix, summed term by term in float64, stored as float32."""
    x = pts[:, 0].astype(np.float64)
    y = pts[:, 1].astype(np.float64)
    out = np.empty(pts.shape, dtype=np.float32)
    out[:, 0] = m[0, 0] * x + m[0, 1] * y + m[0, 2]
    out[:, 1] = m[1, 0] * x + m[1, 1] * y + m[1, 2]
    return out


def landmarks203(rgb: np.ndarray, lmk106: np.ndarray, net: LandmarkNet, trace: Trace = None) -> np.ndarray:
    """(203, 2) float32 points in `rgb`'s pixel coordinates from the face's 106 points."""
    from .crop import official_crop_matrices  # the crop maths is shared with the source crop

    m_o2c, m_c2o = official_crop_matrices(
        lmk106, dsize=LMK203_SIZE, scale=LMK203_SCALE, vy_ratio=LMK203_VY_RATIO, flag_do_rot=True
    )
    crop = _warp(rgb, m_o2c, LMK203_SIZE)
    x = np.ascontiguousarray((crop.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None])
    outputs = net(x)
    # The official runner takes the third output by position; names are not published.
    raw = np.asarray(outputs[2], dtype=np.float32).reshape(-1)
    pts = raw.reshape(-1, 2) * np.float32(LMK203_SIZE)
    mapped = (pts @ m_c2o[:2, :2].T + m_c2o[:2, 2]).astype(np.float32)
    if trace is not None:
        trace.update(
            lmk203_crop_M_o2c=m_o2c,
            lmk203_crop_M_c2o=m_c2o,
            lmk203_input=crop,
            lmk203_out0=np.asarray(outputs[0], dtype=np.float32).reshape(-1),
            lmk203_out1=np.asarray(outputs[1], dtype=np.float32).reshape(-1),
            lmk203_raw=raw,
            lmk203=mapped,
        )
    return mapped


def _distance(pts: np.ndarray, a: int, b: int) -> np.float32:
    return np.float32(np.linalg.norm(pts[a] - pts[b]))


def lip_close_ratio(lmk203: np.ndarray) -> float:
    """Inner-lip opening over mouth width: ‖p90 − p102‖ / (‖p48 − p66‖ + 1e-6), in float32."""
    pts = np.asarray(lmk203, dtype=np.float32)
    return float(_distance(pts, 90, 102) / (_distance(pts, 48, 66) + np.float32(1e-6)))


def eye_close_ratios(lmk203: np.ndarray) -> tuple[float, float]:
    """Each eye's opening over its width (left, right), in float32."""
    pts = np.asarray(lmk203, dtype=np.float32)
    eps = np.float32(1e-6)
    left = _distance(pts, 6, 18) / (_distance(pts, 0, 12) + eps)
    right = _distance(pts, 30, 42) / (_distance(pts, 24, 36) + eps)
    return float(left), float(right)
