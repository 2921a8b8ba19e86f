"""The project's own face stand-ins (worker/liveportrait/face_standins.py) are the face kit's files,
byte for byte, and look like the official ones to onnxruntime; the carried kit inputs rebuild."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.data.face_kit import INPUTS, face_input, face_kit, limited
from worker.liveportrait.face_files import DETECTOR_FILE, FACE_FILES, LANDMARK106_FILE, LANDMARK203_FILE
from worker.liveportrait.face_standins import write_face_standins

ROOT = Path(__file__).resolve().parents[3]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kit_sha256() -> dict[str, str]:
    """The sha256 of the kit's seed-0 stand-ins, by their path in a weights folder."""
    kit = face_kit()
    return {
        str(rel): str(digest)
        for rel, digest in zip(kit["meta_onnx_files"], kit["meta_onnx_sha256"], strict=True)
    }


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_kit_lists_the_files_at_face_files_paths() -> None:
    assert sorted(kit_sha256()) == sorted(FACE_FILES)


def test_command_line_writes_the_kit_detector(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "worker.liveportrait.face_standins", str(tmp_path), "--seed", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert [Path(line) for line in run.stdout.split()] == [tmp_path / rel for rel in FACE_FILES]
    assert sha256_file(tmp_path / DETECTOR_FILE) == kit_sha256()[DETECTOR_FILE]


@pytest.mark.parametrize("relative", [LANDMARK106_FILE, LANDMARK203_FILE])
def test_seed0_landmark_files_are_the_kits(face_standins: Path, relative: str) -> None:
    assert sha256_file(face_standins / relative) == kit_sha256()[relative]


def test_another_seed_gives_other_bytes(tmp_path: Path) -> None:
    written = write_face_standins(tmp_path, seed=1)
    assert written == [tmp_path / rel for rel in FACE_FILES]
    for path, rel in zip(written, FACE_FILES, strict=True):
        assert sha256_file(path) != kit_sha256()[rel], rel


def test_detector_has_the_official_inputs_and_outputs(face_standins: Path) -> None:
    det = session(face_standins / DETECTOR_FILE)
    (inp,) = det.get_inputs()
    assert (inp.name, inp.shape, inp.type) == ("input.1", [1, 3, "?", "?"], "tensor(float)")
    names = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    assert [out.name for out in det.get_outputs()] == names
    # Declared as traced at 640x640, as the official file; the runtime rows follow the input.
    declared = [
        [12800, 1],
        [3200, 1],
        [800, 1],
        [12800, 4],
        [3200, 4],
        [800, 4],
        [12800, 10],
        [3200, 10],
        [800, 10],
    ]
    assert [out.shape for out in det.get_outputs()] == declared
    blob = np.zeros((1, 3, 512, 512), np.float32)
    got = det.run(None, {"input.1": blob})
    rows = [8192, 2048, 512] * 3
    assert [a.shape for a in got] == [(n, c[1]) for n, c in zip(rows, declared, strict=True)]


def test_landmark106_has_the_official_input_and_output(face_standins: Path) -> None:
    lmk = session(face_standins / LANDMARK106_FILE)
    assert [(i.name, i.shape) for i in lmk.get_inputs()] == [("data", [1, 3, 192, 192])]
    assert [(o.name, o.shape) for o in lmk.get_outputs()] == [("fc1", [1, 212])]
    (fc1,) = lmk.run(None, {"data": np.full((1, 3, 192, 192), 128.0, np.float32)})
    assert fc1.shape == (1, 212) and np.abs(fc1).max() < 2.0  # crop units, about -1..1


def test_landmark203_third_output_is_the_406_points(face_standins: Path) -> None:
    lmk = session(face_standins / LANDMARK203_FILE)
    assert [(i.name, i.shape) for i in lmk.get_inputs()] == [("input", [1, 3, 224, 224])]
    assert [o.shape for o in lmk.get_outputs()] == [[1, 3], [1, 203], [1, 406]]
    outs = lmk.run(None, {"input": np.full((1, 3, 224, 224), 0.5, np.float32)})
    assert outs[2].shape == (1, 406)


@pytest.mark.parametrize("name", INPUTS)
def test_rebuilt_inputs_match_the_kit(name: str) -> None:
    image = face_input(name)
    assert image.dtype == np.uint8 and image.shape == tuple(int(v) for v in face_kit()[f"{name}_input_shape"])
    assert hashlib.sha256(image.tobytes()).hexdigest() == str(face_kit()[f"{name}_input_sha256"])


@pytest.mark.parametrize("name", INPUTS)
def test_limited_inputs_match_the_kit(name: str) -> None:
    image = limited(name)
    kit = face_kit()
    assert image.dtype == np.uint8 and image.shape == tuple(int(v) for v in kit[f"{name}_limited_shape"])
    assert hashlib.sha256(image.tobytes()).hexdigest() == str(kit[f"{name}_limited_sha256"])
    if f"{name}_limited_rows" in kit:  # in4, the one the limit resizes: its sampled rows too
        assert np.array_equal(image[:: int(kit[f"{name}_limited_rows_step"])], kit[f"{name}_limited_rows"])
