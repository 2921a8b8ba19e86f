"""dlib face detection and landmarks on the kit's astronaut (see shared/face-detection.md)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from worker.liveportrait.crop import pt2_from_landmarks
from worker.liveportrait.face import Face, FaceDetector, get_detector, lip_open_ratio

# Measured with dlib's 68-point predictor (face-detection.md): eye centres from the corners
# 36/39 and 42/45, mouth centre from the corners 48/54.
LEFT_EYE = np.array([203.2, 101.5])
RIGHT_EYE = np.array([246.5, 104.2])
MOUTH = np.array([223.5, 140.0])
TOL_PX = 3.0


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return get_detector()


def _eyes_mouth(face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lm = face.landmarks
    return lm[[36, 39]].mean(axis=0), lm[[42, 45]].mean(axis=0), lm[[48, 54]].mean(axis=0)


def _assert_sorted(faces: list[Face]) -> None:
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)


def test_astronaut_face(detector: FaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert faces
    _assert_sorted(faces)
    face = faces[0]
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float64
    left, right, mouth = _eyes_mouth(face)
    assert np.linalg.norm(left - LEFT_EYE) < TOL_PX
    assert np.linalg.norm(right - RIGHT_EYE) < TOL_PX
    assert np.linalg.norm(mouth - MOUTH) < TOL_PX
    x0, y0, x1, y1 = face.box
    assert x0 < LEFT_EYE[0] < RIGHT_EYE[0] < x1 and y0 < LEFT_EYE[1] < MOUTH[1] < y1
    assert face.area == pytest.approx((x1 - x0) * (y1 - y0))
    assert face.score > 0.5
    # Landmarks plug straight into the crop's 68-point rule.
    pt2 = pt2_from_landmarks(face.landmarks)
    np.testing.assert_allclose(pt2[0], (left + right) / 2)


def test_no_face_in_flat_or_noise(detector: FaceDetector) -> None:
    assert detector.detect(np.full((300, 400, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_two_faces_larger_first(detector: FaceDetector, astronaut: np.ndarray) -> None:
    canvas = np.full((512, 800, 3), 128, np.uint8)
    canvas[:, :512] = astronaut
    half = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    offset = np.array([530.0, 100.0])
    canvas[100:356, 530:786] = half
    faces = detector.detect(canvas)
    _assert_sorted(faces)
    left, right, _ = _eyes_mouth(faces[0])
    assert np.linalg.norm(left - LEFT_EYE) < TOL_PX and np.linalg.norm(right - RIGHT_EYE) < TOL_PX
    # The half-size copy is found too, later in the list, at half the scale.
    small = [f for f in faces if f.box[0] >= 520]
    assert len(small) == 1
    assert faces.index(small[0]) > 0 and small[0].area < faces[0].area / 2
    s_left, s_right, _ = _eyes_mouth(small[0])
    assert np.linalg.norm(s_left - (offset + LEFT_EYE / 2)) < TOL_PX
    assert np.linalg.norm(s_right - (offset + RIGHT_EYE / 2)) < TOL_PX


def test_large_image_is_mapped_back(detector: FaceDetector, astronaut: np.ndarray) -> None:
    # 1280 px: detection runs on a downscaled copy; boxes and landmarks must come back at full size.
    k = 2.5
    big = cv2.resize(astronaut, (1280, 1280), interpolation=cv2.INTER_CUBIC)
    faces = detector.detect(big)
    assert faces
    left, right, mouth = _eyes_mouth(faces[0])
    # The pixel grids differ by half a source pixel: p_big = k * (p + 0.5) - 0.5.
    to_big = lambda p: k * (p + 0.5) - 0.5  # noqa: E731
    assert np.linalg.norm(left - to_big(LEFT_EYE)) < k * TOL_PX
    assert np.linalg.norm(right - to_big(RIGHT_EYE)) < k * TOL_PX
    assert np.linalg.norm(mouth - to_big(MOUTH)) < k * TOL_PX
    x0, y0, x1, y1 = faces[0].box
    assert 150 < x1 - x0 < 300  # about 2.5 x the 91 px box at 512


def test_detect_rejects_bad_arrays(detector: FaceDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 3), np.float32))


def test_detector_is_shared() -> None:
    assert get_detector() is get_detector()


def test_lip_open_ratio_on_astronaut(detector: FaceDetector, astronaut: np.ndarray) -> None:
    ratio = lip_open_ratio(detector.detect(astronaut)[0].landmarks)
    assert 0.0 <= ratio < 0.3


def test_lip_open_ratio_indices() -> None:
    rng = np.random.default_rng(2)
    lm = rng.uniform(0, 100, (68, 2))
    lm[48], lm[54] = (100.0, 200.0), (130.0, 240.0)  # 50 apart
    lm[62], lm[66] = (115.0, 215.0), (115.0, 225.0)  # 10 apart
    assert lip_open_ratio(lm) == pytest.approx(10 / (50 + 1e-6), rel=1e-12)
    # Outer-lip points do not take part.
    lm[[51, 57, 61, 63, 65, 67]] += 30.0
    assert lip_open_ratio(lm) == pytest.approx(0.2, rel=1e-6)
    closed = lm.copy()
    closed[66] = closed[62]
    assert lip_open_ratio(closed) == 0.0
    with pytest.raises(ValueError):
        lip_open_ratio(lm[:60])
