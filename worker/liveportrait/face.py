"""Offline face detection and 68-point landmarks with dlib (see shared/face-detection.md).

The official pipeline uses InsightFace models fetched from a hub at run time; dlib's HOG detector,
its CNN (MMOD) detector and the iBUG 68-point predictor ship inside PyPI wheels, and the 68-point
layout feeds the official crop rule directly (crop.pt2_from_landmarks).

HOG alone misses ordinary photos: it finds frontal faces within about ±40° of upright and of at
least 80 px (40 px with one pyramid upsampling, which costs four times as much). So detection is a
cascade of passes (`PASSES`), cheapest first, stopping at the first pass that finds a face:

1. upright, on a copy with a long side of 1,024 px, no upsampling: nearly every portrait ends
   here, within the 150 ms budget;
2. upright with one upsampling step: faces down to ~40 px;
3. the image turned by 90°, 270°, 180° and the four diagonals: with HOG's ±40° every roll is
   within reach of one of them (a phone photo saved sideways is common);
4. upright with two upsampling steps: faces down to ~20 px (a group or distant shot);
5. the CNN detector, more tolerant of pose, light and blur but about 2 s of CPU even at 512 px.

A photo without a face runs every pass (about 1-3 s of CPU, BENCHMARKS.md).

Boxes and landmarks always come back in the original image's coordinates and orientation, so the
crop (which rotates by the landmarks' own eye-mouth axis) and paste-back work unchanged.
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

# Long side of the copy detection works on, reduced or enlarged: HOG's cost grows with the pixel
# count (about 100 ms of CPU at this size), and enlarging a small photo brings its faces up to
# HOG's 80 px, as one pyramid upsampling would, at a fixed cost.
DETECT_SIDE = 1024
# HOG's smallest face at no upsampling; each upsampling step halves it.
HOG_MIN_FACE_PX = 80.0
# Faces smaller than this in the original photo are not searched for: a pass that could only find
# smaller ones is skipped (so a small image never pays for the upsampled passes).
MIN_FACE_PX = 24.0
# Long side for the CNN fallback: its cost on a CPU is seconds even at this size (BENCHMARKS.md).
CNN_MAX_SIDE = 512
# Detections much weaker than the best one in the same pass are dropped (HOG false positives on
# clothing score far below a real face and can be nearly as large).
RELATIVE_MIN_SCORE = 0.25

_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_CNN_FILE = "mmod_human_face_detector.dat"


@dataclass(frozen=True)
class DetectPass:
    """One try of the cascade. `angle` turns the image counter-clockwise (degrees) first."""

    name: str
    angle: float = 0.0
    upsample: int = 0
    cnn: bool = False
    # The fallbacks search far more positions, so they need a clearer detection than the first pass.
    min_score: float = 0.0


PASSES: tuple[DetectPass, ...] = (
    DetectPass("upright"),
    DetectPass("upright, small faces", upsample=1, min_score=0.1),
    *(DetectPass(f"turned {a}°", angle=a, min_score=0.1) for a in (90, 270, 180, 45, 315, 135, 225)),
    DetectPass("upright, tiny faces", upsample=2, min_score=0.3),
    DetectPass("cnn", cnn=True, min_score=0.3),
)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face. `box` is (x0, y0, x1, y1), in original-image pixels (for a face found
    turned, the axis-aligned box around the turned detection)."""

    box: tuple[float, float, float, float]
    # Original-image coordinates: (68, 2) float64 in iBUG order from dlib, (106, 2) float32 in
    # InsightFace's order from the official pipeline.
    landmarks: np.ndarray
    # Detector margin (HOG) or confidence (CNN); > 0 means detected, weak false positives near 0.
    score: float = 0.0
    # The pass that found it (PASSES[i].name), for the logs.
    found_by: str = "upright"
    # Face size in pixels: the detector's square side, measured in the original image.
    size: float = 0.0

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


@dataclass(frozen=True)
class FoundFaces:
    """What a search found: how many faces, and the one asked for with its landmarks (None when
    there are fewer faces than its index)."""

    count: int
    face: Face | None


def _models_dir() -> Path:
    # Importing face_recognition_models itself needs pkg_resources, which new setuptools dropped;
    # find_spec locates the package without executing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise WeightsError("package face_recognition_models is not installed; it provides the landmark model")
    return Path(spec.origin).parent / "models"


def _scale_matrix(width: int, height: int, new_w: int, new_h: int) -> np.ndarray:
    """original -> resized pixel coordinates, with cv2.resize's pixel-centre convention."""
    sx, sy = new_w / width, new_h / height
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _resized(rgb: np.ndarray, max_side: int, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """The image with its long side clamped to [min_side, max_side], and original -> it (3x3)."""
    height, width = rgb.shape[:2]
    long_side = max(height, width)
    target = min(max(long_side, min_side), max_side)
    if target == long_side:
        return rgb, np.eye(3)
    k = target / long_side
    new_w, new_h = max(1, round(width * k)), max(1, round(height * k))
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, (new_w, new_h), interpolation=interp), _scale_matrix(width, height, new_w, new_h)


def _turned(rgb: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """`rgb` turned counter-clockwise by `angle` on a canvas large enough to hold all of it, and
    the matrix from `rgb`'s coordinates to the turned image's (3x3)."""
    if angle % 360 == 0:
        return rgb, np.eye(3)
    height, width = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    new_w = round(height * sin + width * cos)
    new_h = round(height * cos + width * sin)
    m[0, 2] += (new_w - width) / 2.0
    m[1, 2] += (new_h - height) / 2.0
    # Quarter turns are exact permutations of pixels; nearest keeps them so (and is cheaper).
    exact = angle % 90 == 0
    turned = cv2.warpAffine(
        rgb,
        m,
        (new_w, new_h),
        flags=cv2.INTER_NEAREST if exact else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return turned, np.vstack([m, [0.0, 0.0, 1.0]])


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


class FaceDetector:
    """The detection cascade plus the 68-point shape predictor; one instance per process is enough."""

    def __init__(self, predictor_path: Path | None = None, *, cnn_path: Path | None = None) -> None:
        import dlib  # deferred: only workers that detect faces pay for loading dlib

        if predictor_path is None or cnn_path is None:
            models = _models_dir()
            predictor_path = predictor_path or models / _PREDICTOR_FILE
            cnn_path = cnn_path or models / _CNN_FILE
        if not predictor_path.is_file():
            raise WeightsError(f"landmark model not found at {predictor_path}")
        self._dlib: Any = dlib
        self._hog: Any = dlib.get_frontal_face_detector()
        self._predictor: Any = dlib.shape_predictor(str(predictor_path))
        self._cnn_path = cnn_path
        self._cnn: Any = None  # loaded on first use: most images never reach the fallback
        # dlib makes no promise that one detector object can run in several threads at once.
        self._lock = threading.Lock()

    def _cnn_model(self) -> Any:
        if self._cnn is None:
            if not self._cnn_path.is_file():
                raise WeightsError(f"CNN face detector model not found at {self._cnn_path}")
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(self._cnn_path))
        return self._cnn

    def detect(self, rgb: np.ndarray, passes: tuple[DetectPass, ...] = PASSES) -> list[Face]:
        """All faces in an HxWx3 uint8 RGB image, largest first, from the first pass that finds any."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
        rgb = np.ascontiguousarray(rgb)
        work, o2w = _resized(rgb, DETECT_SIDE, DETECT_SIDE)
        small: tuple[np.ndarray, np.ndarray] | None = None
        with self._lock:
            for spec in passes:
                if spec.upsample and not spec.cnn:
                    # The sizes this pass adds over the one with one step less upsampling, in
                    # original pixels: up to twice its minimum.
                    largest_new = 2 * HOG_MIN_FACE_PX / 2**spec.upsample / o2w[0, 0]
                    if largest_new < MIN_FACE_PX:
                        continue
                if spec.cnn:
                    if small is None:
                        small = _resized(rgb, CNN_MAX_SIDE, 0)
                    image, o2i = small
                else:
                    image, o2i = work, o2w
                turned, i2t = _turned(image, spec.angle)
                faces = self._run_pass(spec, turned, np.linalg.inv(i2t @ o2i))
                if faces:
                    return faces
        return []

    def _run_pass(self, spec: DetectPass, image: np.ndarray, to_original: np.ndarray) -> list[Face]:
        image = np.ascontiguousarray(image)
        if spec.cnn:
            found = [(d.rect, float(d.confidence)) for d in self._cnn_model()(image, spec.upsample)]
        else:
            rects, scores, _ = self._hog.run(image, spec.upsample, spec.min_score)
            found = list(zip(rects, (float(s) for s in scores), strict=True))
        found = [(rect, score) for rect, score in found if score >= spec.min_score]
        if not found:
            return []
        best = max(score for _, score in found)
        linear = float(np.sqrt(abs(np.linalg.det(to_original[:2, :2]))))
        faces: list[Face] = []
        for rect, score in found:
            if score < RELATIVE_MIN_SCORE * best:
                continue
            shape = self._predictor(image, rect)
            pts = _apply(to_original, np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64))
            pts.setflags(write=False)
            # dlib's right/bottom are inclusive pixel indices; +1 gives a half-open box.
            x0, y0, x1, y1 = rect.left(), rect.top(), rect.right() + 1.0, rect.bottom() + 1.0
            square = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
            corners = _apply(to_original, square)
            box = (
                float(corners[:, 0].min()),
                float(corners[:, 1].min()),
                float(corners[:, 0].max()),
                float(corners[:, 1].max()),
            )
            size = float(np.sqrt((x1 - x0) * (y1 - y0))) * linear
            faces.append(Face(box=box, landmarks=pts, score=score, found_by=spec.name, size=size))
        # Largest first, as the official pipeline orders InsightFace boxes; the score only breaks
        # exact ties, so the order does not depend on dlib's output order.
        faces.sort(key=lambda f: (f.size, f.score), reverse=True)
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


class DlibFaceFinder:
    """The fallback behind the engine's face-finder interface (see face_finder.py): the cascade
    above, faces ordered by size, and the 68-point lip ratio."""

    name = "dlib"

    def find(
        self, rgb: np.ndarray, *, face_index: int = 0, thorough: bool = True, trace: object = None
    ) -> FoundFaces:
        # Loading the predictor takes about a second: on first use, as before.
        faces = get_detector().detect(rgb, PASSES if thorough else PASSES[:1])
        face = faces[face_index] if face_index < len(faces) else None
        return FoundFaces(len(faces), face)

    def lip_ratio(self, rgb: np.ndarray, face: Face, trace: object = None) -> float:
        return lip_open_ratio(face.landmarks)
