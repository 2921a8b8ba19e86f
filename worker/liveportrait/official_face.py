"""The official face pipeline: SCRFD boxes, faces by box area, 106 points for the crop, 203 points
for the lip ratio (shared/face-kit README; LivePortrait's `Cropper.crop_source_image`).

Beyond the official code: when nothing is found upright, the image is tried turned by a quarter
turn (90°, 270°, then 180°), since a phone photo saved sideways without EXIF is common and the
official detector finds no face on it. Boxes and points always come back in the given image's
coordinates, so the crop (which turns by the face's own eye-mouth axis) works unchanged.
"""

from __future__ import annotations

import numpy as np

from . import landmarks, scrfd
from .face import Face, FoundFaces
from .face_models import FaceNets
from .landmarks import Trace

# Quarter turns (counter-clockwise, as np.rot90 counts them) tried when nothing is found upright.
RETRY_TURNS = (1, 3, 2)


def _turn_back(points: np.ndarray, turns: int, height: int, width: int) -> np.ndarray:
    """Pixel coordinates in np.rot90(image, turns) -> in the HxW image itself (exact for centres)."""
    x, y = points[..., 0], points[..., 1]
    if turns == 1:
        back = (width - 1 - y, x)
    elif turns == 2:
        back = (width - 1 - x, height - 1 - y)
    elif turns == 3:
        back = (y, height - 1 - x)
    else:
        back = (x, y)
    return np.stack(back, axis=-1).astype(np.float32)


def _by_area(dets: scrfd.Detections) -> list[int]:
    """Rows of `dets` largest box first; equal areas keep the detector's order (a stable sort)."""
    boxes = dets.boxes
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return sorted(range(len(boxes)), key=lambda i: float(areas[i]), reverse=True)


class OfficialFaceFinder:
    name = "official"

    def __init__(self, nets: FaceNets) -> None:
        self.nets = nets
        # The official Cropper warms the detector on a black image; it also takes the first
        # request's one-off allocation cost out of its latency.
        scrfd.detect(np.zeros((scrfd.DET_SIZE, scrfd.DET_SIZE, 3), np.uint8), nets.detector)

    def find(
        self, rgb: np.ndarray, *, face_index: int = 0, thorough: bool = True, trace: Trace = None
    ) -> FoundFaces:
        """The faces in an HxWx3 uint8 RGB image in the official order (largest box first), and
        face `face_index` with its 106 points. `thorough` adds the quarter-turn retries."""
        height, width = rgb.shape[:2]
        for turns in (0, *RETRY_TURNS) if thorough else (0,):
            image = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
            dets = scrfd.detect(image, self.nets.detector, trace=trace if turns == 0 else None)
            if len(dets.scores) == 0:
                continue
            order = _by_area(dets)
            if trace is not None and turns == 0:
                trace.update(
                    faces_det_row=np.array(order, dtype=np.int32),
                    faces_bbox=dets.boxes[order],
                    faces_score=dets.scores[order],
                    faces_kps=dets.keypoints[order],
                )
            if face_index >= len(order):
                return FoundFaces(len(order), None)
            row = order[face_index]
            lmk = landmarks.landmarks106(image, dets.boxes[row], self.nets.landmark106, trace)
            corners = dets.boxes[row].reshape(2, 2)
            if turns:
                lmk = _turn_back(lmk, turns, height, width)
                corners = _turn_back(corners, turns, height, width)
            box = (
                float(corners[:, 0].min()),
                float(corners[:, 1].min()),
                float(corners[:, 0].max()),
                float(corners[:, 1].max()),
            )
            found_by = f"turned {turns * 90}°" if turns else "upright"
            size = float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
            face = Face(box=box, landmarks=lmk, score=float(dets.scores[row]), found_by=found_by, size=size)
            return FoundFaces(len(order), face)
        return FoundFaces(0, None)

    def lip_ratio(self, rgb: np.ndarray, face: Face, trace: Trace = None) -> float:
        """The 203-point lip ratio that drives lip zero, from the face's 106 points."""
        pts = landmarks.landmarks203(rgb, face.landmarks, self.nets.landmark203, trace)
        ratio = landmarks.lip_close_ratio(pts)
        if trace is not None:
            trace["lip_close_ratio"] = np.array([[ratio]], dtype=np.float32)
            trace["eye_close_ratio"] = np.array([landmarks.eye_close_ratios(pts)], dtype=np.float32)
        return ratio
