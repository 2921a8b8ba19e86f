"""Face finding on transformed photos: recall and time per image (BENCHMARKS.md, "Face detection").

    python -m bench.faces [--repeat N]

The set is generated from the photos in tests/data: the astronaut turned (rolls 0-180° both ways),
shrunk into a wider scene or enlarged (faces of 20-400 px), darkened, mirrored, two people, plus
photos without a person (skimage's chelsea and coffee, a flat and a noise image) that must yield
nothing. A face counts as found when the largest detection's eye midpoint lies within a quarter of
the face size of where the transform put the real one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from tests.data import photo
from worker.liveportrait.face import CNN_MAX_SIDE, DetectPass, Face, FaceDetector, get_detector

# Where dlib's 68-point predictor puts the astronaut's eye centres and the size of its HOG box, on
# the 512 px original (tests/worker/liveportrait/test_face.py pins the same points).
EYE_MID = np.array([224.85, 102.85])
FACE_PX = 91.0


@dataclass
class Case:
    group: str
    name: str
    image: np.ndarray
    # Expected eye midpoint in the image, or None when no face may be found.
    eye_mid: np.ndarray | None
    face_px: float = 0.0
    min_faces: int = 1


def _turn(rgb: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    height, width = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    new_w, new_h = round(height * sin + width * cos), round(height * cos + width * sin)
    m[0, 2] += (new_w - width) / 2.0
    m[1, 2] += (new_h - height) / 2.0
    return cv2.warpAffine(rgb, m, (new_w, new_h), flags=cv2.INTER_LINEAR), m


def _scene(face: np.ndarray, face_px: float) -> tuple[np.ndarray, np.ndarray]:
    """The portrait scaled so that its face is `face_px` wide, placed in a 1024x768 scene (or, when
    it is larger than that, alone): (image, eye midpoint)."""
    k = face_px / FACE_PX
    size = max(1, round(512 * k))
    scaled = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    eye = (EYE_MID + 0.5) * k - 0.5
    if size >= 768:
        return scaled, eye
    scene = cv2.resize(photo("coffee"), (1024, 768), interpolation=cv2.INTER_LINEAR)
    x, y = min(600, 1024 - size), 60
    scene[y : y + size, x : x + size] = scaled
    return scene, eye + [x, y]


def cases() -> Iterator[Case]:
    face = photo("astronaut")
    for angle in (0, 15, 30, 40, 45, 50, 60, 75, 90, 120, 135, 150, 180, -30, -45, -60, -90, -135):
        image, m = _turn(face, angle)
        yield Case("roll", f"{angle:+d}°", image, m[:, :2] @ EYE_MID + m[:, 2], FACE_PX)
    for face_px in (20, 24, 30, 40, 60, 80, 120, 200, 300, 400):
        image, eye = _scene(face, face_px)
        yield Case("size", f"{face_px} px face in {image.shape[1]}x{image.shape[0]}", image, eye, face_px)
    for width in (154, 102):  # the whole photo that small (issue 09's measurements)
        k = width / 512
        small = cv2.resize(face, (width, width), interpolation=cv2.INTER_AREA)
        yield Case("size", f"whole photo at {width} px", small, (EYE_MID + 0.5) * k - 0.5, FACE_PX * k)
    for gain in (0.4, 0.2):
        dark = np.clip(face.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        yield Case("light", f"darkened x{gain}", dark, EYE_MID, FACE_PX)
    mirrored = np.ascontiguousarray(face[:, ::-1])
    yield Case("mirror", "mirrored", mirrored, np.array([511 - EYE_MID[0], EYE_MID[1]]), FACE_PX)
    turned, m = _turn(mirrored, 90)
    eye = np.array([511 - EYE_MID[0], EYE_MID[1]])
    yield Case("mirror", "mirrored, turned 90°", turned, m[:, :2] @ eye + m[:, 2], FACE_PX)
    two = np.full((512, 800, 3), 128, np.uint8)
    two[:, :512] = face
    two[100:356, 530:786] = cv2.resize(face, (256, 256), interpolation=cv2.INTER_AREA)
    # The small one (45 px) is only searched for when no face is found at HOG's 80 px, so it is
    # not counted: the table shows the count.
    yield Case("two faces", "512 + 256 px portraits", two, EYE_MID, FACE_PX)
    two = np.full((512, 920, 3), 128, np.uint8)
    two[:, :512] = face
    two[64:448, 530:914] = cv2.resize(face, (384, 384), interpolation=cv2.INTER_AREA)
    yield Case("two faces", "512 + 384 px portraits", two, EYE_MID, FACE_PX, min_faces=2)
    side = np.full((512, 1100, 3), 128, np.uint8)
    side[:, :512] = face
    side[:, 560:1072] = mirrored
    yield Case("two faces", "two 512 px portraits", side, EYE_MID, FACE_PX, min_faces=2)
    for name in ("chelsea", "coffee"):
        yield Case("no person", name, photo(name), None)
    yield Case("no person", "flat grey", np.full((600, 800, 3), 128, np.uint8), None)
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    yield Case("no person", "noise", noise, None)


def judge(case: Case, faces: list[Face]) -> tuple[bool, float | None]:
    """(found, eye-midpoint error in px of the best matching face among the largest)."""
    if case.eye_mid is None:
        return not faces, None
    if len(faces) < case.min_faces:
        return False, None
    # Any of the largest faces (two portraits of one size tie)
    errors = []
    for face in (f for f in faces if f.size >= 0.9 * faces[0].size):
        lm = face.landmarks
        eye_mid = (lm[[36, 39]].mean(axis=0) + lm[[42, 45]].mean(axis=0)) / 2.0
        errors.append(float(np.linalg.norm(eye_mid - case.eye_mid)))
    error = min(errors)
    return error <= 0.25 * max(case.face_px, 8.0), error


def timed(
    detector: FaceDetector, image: np.ndarray, repeat: int, **kwargs: object
) -> tuple[float, float, list[Face]]:
    """Median wall and CPU milliseconds of `detect`, and its faces. dlib runs on one thread, so
    the CPU time is what the detection costs on an idle core even when the machine is busy."""
    walls, cpus, faces = [], [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        faces = detector.detect(image, **kwargs)  # type: ignore[arg-type]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000, faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per image; the median is reported")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    detector = get_detector()
    detector.detect(photo("astronaut"))  # load and warm up

    print("| group | case | found | faces | pass | eye error px | CPU ms | wall ms |")
    print("|---|---|---|---|---|---|---|---|")
    by_group: dict[str, list[bool]] = {}
    for case in cases():
        wall, cpu, faces = timed(detector, case.image, args.repeat)
        ok, error = judge(case, faces)
        by_group.setdefault(case.group, []).append(ok)
        found_by = faces[0].found_by if faces else "-"
        mark = "yes" if ok else "**no**"
        err = "-" if error is None else f"{error:.1f}"
        cells = (case.group, case.name, mark, len(faces), found_by, err, f"{cpu:.0f}", f"{wall:.0f}")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()
    for group, oks in by_group.items():
        print(f"{group}: {sum(oks)}/{len(oks)}")

    print()
    face = photo("astronaut")
    big = cv2.resize(face, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    wall, cpu, _ = timed(detector, big, max(args.repeat, 5))
    print(f"upright success at 1024x1024 (detection + landmarks): CPU {cpu:.0f} ms, wall {wall:.0f} ms")
    wall, cpu, _ = timed(detector, face, max(args.repeat, 5))
    print(f"upright success at 512x512: CPU {cpu:.0f} ms, wall {wall:.0f} ms")
    cnn_only = (DetectPass("cnn", cnn=True, min_score=0.3),)
    wall, cpu, faces = timed(detector, big, 1, passes=cnn_only)
    print(
        f"CNN detector alone at {CNN_MAX_SIDE} px long side: CPU {cpu:.0f} ms, wall {wall:.0f} ms, "
        f"{len(faces)} face"
    )


if __name__ == "__main__":
    main()
