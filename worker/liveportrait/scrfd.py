"""The official face detector's pre- and post-processing: SCRFD (`det_10g.onnx`) as InsightFace
runs it for LivePortrait (shared/face-kit README, "det_10g.onnx").

The image is letterboxed into a 512x512 canvas, the network scores two anchors per cell at
strides 8, 16 and 32, and candidates above the threshold go through a greedy NMS with the "+1"
pixel convention. The arithmetic stays in float32 where the official code's does, so boxes and
keypoints come out bit for bit as it computes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

DET_SIZE = 512
# LivePortrait's command line and app pass 0.15 (CropConfig's own default, 0.1, is never used).
DET_THRESHOLD = 0.15
NMS_THRESHOLD = 0.4
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2

# Optional per-stage record for conformance checks and debugging: kit names -> arrays.
Trace = dict[str, Any] | None
# Runs the network: the (1, 3, 512, 512) float32 blob in, the nine outputs in the file's order out.
DetectorNet = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class Detections:
    """Faces in the detector's order (NMS order), in the input image's pixel coordinates."""

    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (K,) float32
    keypoints: np.ndarray  # (K, 5, 2) float32: eyes, nose, mouth corners


def letterbox(rgb: np.ndarray, size: int = DET_SIZE) -> tuple[np.ndarray, float]:
    """The image resized into the top-left of a black size x size canvas keeping its aspect, and
    the scale from image to canvas pixels (new height over height, as InsightFace measures it)."""
    height, width = rgb.shape[:2]
    ratio = float(height) / width
    if ratio > 1.0:
        new_h, new_w = size, int(size / ratio)
    else:
        new_w, new_h = size, int(size * ratio)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h))
    return canvas, float(new_h) / height


def blob_of(canvas: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32, RGB, (p - 127.5) / 128: exact in float32 (128 is a power of two)."""
    x = (canvas.astype(np.float32) - np.float32(127.5)) / np.float32(128.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _anchor_centres(height: int, width: int, stride: int) -> np.ndarray:
    """(h * w * 2, 2) float32 (x, y) centres, rows in (cell row, cell column, anchor) order."""
    ys, xs = np.mgrid[:height, :width]
    centres = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(centres, ANCHORS_PER_CELL, axis=0)


def decode_outputs(
    outputs: list[np.ndarray], size: int, threshold: float, trace: Trace = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates at or above `threshold`, strides concatenated 8, 16, 32, in canvas pixels:
    scores (N,), boxes (N, 4), keypoints (N, 5, 2), all float32."""
    scores_all, boxes_all, kps_all = [], [], []
    n = len(STRIDES)
    for i, stride in enumerate(STRIDES):
        scores = np.asarray(outputs[i], dtype=np.float32).reshape(-1)
        distances = np.asarray(outputs[i + n], dtype=np.float32).reshape(-1, 4) * np.float32(stride)
        offsets = np.asarray(outputs[i + 2 * n], dtype=np.float32).reshape(-1, 10) * np.float32(stride)
        centres = _anchor_centres(size // stride, size // stride, stride)
        if len(scores) != len(centres):
            raise ValueError(
                f"detector output for stride {stride} has {len(scores)} rows, expected {len(centres)}"
            )
        pos = np.flatnonzero(scores >= np.float32(threshold))
        cx, cy = centres[pos, 0:1], centres[pos, 1:2]
        d = distances[pos]
        boxes = np.concatenate([cx - d[:, 0:1], cy - d[:, 1:2], cx + d[:, 2:3], cy + d[:, 3:4]], axis=1)
        o = offsets[pos].reshape(-1, 5, 2)
        kps = np.stack([cx + o[:, :, 0], cy + o[:, :, 1]], axis=-1)
        if trace is not None:
            trace[f"raw_scores_s{stride}"] = scores
            trace[f"pos_s{stride}"] = pos.astype(np.int32)
            trace[f"raw_boxes_s{stride}_pos"] = distances[pos] / np.float32(stride)
            trace[f"raw_kps_s{stride}_pos"] = offsets[pos] / np.float32(stride)
        scores_all.append(scores[pos])
        boxes_all.append(boxes)
        kps_all.append(kps)
    return np.concatenate(scores_all), np.concatenate(boxes_all), np.concatenate(kps_all)


def nms(dets: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression on (N, 5) [x1, y1, x2, y2, score] rows: indices kept, best
    first. Sides count one pixel more than their difference and a box goes when its overlap with
    a kept one is above `threshold` (InsightFace's rule)."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    one = np.float32(1.0)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(np.float32(0.0), np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + one)
        h = np.maximum(np.float32(0.0), np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + one)
        inter = w * h
        overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= np.float32(threshold)]
    return np.array(keep, dtype=np.int64)


def detect(
    rgb: np.ndarray,
    net: DetectorNet,
    *,
    threshold: float | None = None,
    nms_threshold: float | None = None,
    trace: Trace = None,
) -> Detections:
    """Every face SCRFD finds in an HxWx3 uint8 RGB image, in NMS order (best score first).
    The thresholds default to the module's (read at each call)."""
    threshold = DET_THRESHOLD if threshold is None else threshold
    nms_threshold = NMS_THRESHOLD if nms_threshold is None else nms_threshold
    canvas, det_scale = letterbox(rgb)
    blob = blob_of(canvas)
    outputs = net(blob)
    scores, boxes, kps = decode_outputs(outputs, DET_SIZE, threshold, trace)
    scale = np.float32(det_scale)
    pre = np.concatenate([boxes / scale, scores[:, None]], axis=1).astype(np.float32)
    # numpy's default (unstable) sort, as the official code: exact ties may come either way.
    order = scores.argsort()[::-1]
    pre = pre[order]
    pre_kps = (kps / scale)[order]
    keep = nms(pre, nms_threshold)
    if trace is not None:
        trace.update(
            det_img=canvas,
            det_scale=det_scale,
            det_blob_corner=blob[0, :, :4, :4],
            raw_outputs=outputs,
            pre_nms_dets=pre,
            pre_nms_kps=pre_kps,
            pre_nms_order=order.astype(np.int32),
            keep=keep.astype(np.int32),
        )
    dets = pre[keep]
    return Detections(boxes=dets[:, :4], scores=dets[:, 4], keypoints=pre_kps[keep])
