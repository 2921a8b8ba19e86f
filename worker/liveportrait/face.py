"""Offline face detection and 68-point landmarks with dlib (see shared/face-detection.md).

The official pipeline uses InsightFace models fetched from a hub at run time; dlib's HOG detector
and the iBUG 68-point predictor ship inside PyPI wheels, and the 68-point layout feeds the official
crop rule directly (crop.pt2_from_landmarks).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from worker.liveportrait.errors import WeightsError

# Detection runs on a copy whose long side is at most this: HOG cost grows with the pixel count,
# and faces worth editing stay well above the detector's ~40 px minimum at this size.
DETECT_MAX_SIDE = 1024
# One pyramid upsampling step lets the HOG detector find faces down to ~40 px (80 px without).
RELATIVE_MIN_SCORE = 0.25
UPSAMPLE = 1

_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face. `box` is (x0, y0, x1, y1), half-open, in original-image pixels."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (68, 2) float64, iBUG order, original-image coordinates
    # HOG detector margin (> 0 means detected); weak false positives score near 0.
    score: float = 0.0

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def _models_dir() -> Path:
    # Importing face_recognition_models itself needs pkg_resources, which new setuptools dropped;
    # find_spec locates the package without executing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise WeightsError("package face_recognition_models is not installed; it provides the landmark model")
    return Path(spec.origin).parent / "models"


class FaceDetector:
    """HOG face detector plus 68-point shape predictor; one instance per process is enough."""

    def __init__(self, predictor_path: Path | None = None) -> None:
        import dlib  # deferred: only workers that detect faces pay for loading dlib

        path = predictor_path if predictor_path is not None else _models_dir() / _PREDICTOR_FILE
        if not path.is_file():
            raise WeightsError(f"landmark model not found at {path}")
        self._dlib: Any = dlib
        self._detector: Any = dlib.get_frontal_face_detector()
        self._predictor: Any = dlib.shape_predictor(str(path))
        # dlib makes no promise that one detector object can run in several threads at once.
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All frontal faces in an HxWx3 uint8 RGB image, largest box first."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
        rgb = np.ascontiguousarray(rgb)
        height, width = rgb.shape[:2]
        factor = min(1.0, DETECT_MAX_SIDE / max(height, width))
        if factor < 1.0:
            small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
            small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
            # Per-axis factors, because rounding the small size makes them differ slightly.
            fx, fy = width / small_size[0], height / small_size[1]
        else:
            small, fx, fy = rgb, 1.0, 1.0

        faces: list[Face] = []
        with self._lock:
            rects, scores, _ = self._detector.run(small, UPSAMPLE, 0.0)
            for rect, score in zip(rects, scores, strict=True):
                # dlib's right/bottom are inclusive pixel indices; +1 gives a half-open box.
                box = (
                    rect.left() * fx,
                    rect.top() * fy,
                    (rect.right() + 1) * fx,
                    (rect.bottom() + 1) * fy,
                )
                # Landmarks are fitted on the full-resolution image for precision.
                full_rect = self._dlib.rectangle(
                    round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1
                )
                shape = self._predictor(rgb, full_rect)
                pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
                pts.setflags(write=False)
                faces.append(Face(box=box, landmarks=pts, score=float(score)))
        # HOG false positives (on clothing, say) score far below a real face in the same image and
        # can be nearly as large, so detections much weaker than the best one are dropped first.
        if faces:
            best = max(f.score for f in faces)
            faces = [f for f in faces if f.score >= RELATIVE_MIN_SCORE * best]
        # Largest first, as the official pipeline orders InsightFace boxes; the score only breaks
        # exact ties, so the order does not depend on dlib's output order.
        faces.sort(key=lambda f: (f.area, f.score), reverse=True)
        return faces


_instance: FaceDetector | None = None
_instance_lock = threading.Lock()


def get_detector() -> FaceDetector:
    """The process-wide detector, loaded on first use (loading the predictor takes about a second)."""
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = FaceDetector()
    return _instance


def lip_open_ratio(landmarks68: np.ndarray) -> float:
    """Inner-lip opening over mouth width, from 68 iBUG points (0-based).

    Approximates LivePortrait's lip ratio, which is defined on its own 203-point landmarks
    (‖p90−p102‖ / ‖p48−p66‖ there) and which its lip MLP was trained on: here the inner-lip midpoints
    62/66 and the mouth corners 48/54 play those roles, so values are close but not identical.
    """
    pts = np.asarray(landmarks68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {pts.shape}")
    opening = float(np.linalg.norm(pts[62] - pts[66]))
    width = float(np.linalg.norm(pts[48] - pts[54]))
    return opening / (width + 1e-6)
