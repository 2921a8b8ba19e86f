"""dlib face detection and landmarks on the kit's astronaut (see shared/face-detection.md)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.data import photo
from worker.liveportrait.crop import pt2_from_landmarks
from worker.liveportrait.face import DetectPass, Face, FaceDetector, get_detector, lip_open_ratio

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


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_a_turned_photo_is_found_and_mapped_back(
    detector: FaceDetector, astronaut: np.ndarray, quarter_turns: int
) -> None:
    # np.rot90 turns counter-clockwise: (x, y) -> (y, W - 1 - x) for one quarter turn.
    turned = np.ascontiguousarray(np.rot90(astronaut, k=quarter_turns))
    faces = detector.detect(turned)
    assert faces and faces[0].found_by.startswith("turned")

    def to_turned(p: np.ndarray) -> np.ndarray:
        for _ in range(quarter_turns):
            p = np.array([p[1], 511 - p[0]])
        return p

    left, right, mouth = _eyes_mouth(faces[0])
    assert np.linalg.norm(left - to_turned(LEFT_EYE)) < TOL_PX
    assert np.linalg.norm(right - to_turned(RIGHT_EYE)) < TOL_PX
    assert np.linalg.norm(mouth - to_turned(MOUTH)) < TOL_PX
    x0, y0, x1, y1 = faces[0].box
    assert x0 <= mouth[0] <= x1 and y0 <= mouth[1] <= y1


def test_a_diagonal_roll_is_found(detector: FaceDetector, astronaut: np.ndarray) -> None:
    # 60°: beyond HOG's own reach upright, within it once turned by a quarter (the canvas grows
    # to hold the whole turned photo, as a phone's rotation would).
    m = cv2.getRotationMatrix2D((255.5, 255.5), 60, 1.0)
    m[:, 2] += (700 - 512) / 2
    rolled = cv2.warpAffine(astronaut, m, (700, 700))
    faces = detector.detect(rolled)
    assert faces and faces[0].found_by.startswith("turned")
    expected = m[:, :2] @ ((LEFT_EYE + RIGHT_EYE) / 2) + m[:, 2]
    left, right, _ = _eyes_mouth(faces[0])
    assert np.linalg.norm((left + right) / 2 - expected) < 2 * TOL_PX


def test_a_small_face_in_a_large_photo(detector: FaceDetector, astronaut: np.ndarray) -> None:
    # A 32 px face in a 1024 px scene: found by the upsampled pass, in original coordinates.
    scene = cv2.resize(photo("coffee"), (1024, 768))
    small = cv2.resize(astronaut, (180, 180), interpolation=cv2.INTER_AREA)
    scene[300:480, 700:880] = small
    faces = detector.detect(scene)
    assert faces and faces[0].found_by == "upright, small faces"
    k = 180 / 512
    left, right, _ = _eyes_mouth(faces[0])
    expected = np.array([700.0, 300.0]) + ((LEFT_EYE + RIGHT_EYE) / 2 + 0.5) * k - 0.5
    assert np.linalg.norm((left + right) / 2 - expected) < TOL_PX
    assert 20 < faces[0].size < 50


def test_the_cnn_fallback_finds_the_face(detector: FaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut, passes=(DetectPass("cnn", cnn=True, min_score=0.3),))
    assert faces and faces[0].found_by == "cnn"
    left, right, _ = _eyes_mouth(faces[0])
    assert np.linalg.norm(left - LEFT_EYE) < TOL_PX and np.linalg.norm(right - RIGHT_EYE) < TOL_PX


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_no_face_in_photos_without_a_person(detector: FaceDetector, name: str) -> None:
    assert detector.detect(photo(name)) == []
