"""Which face pipeline an engine uses, and what the official one adds to the official code: the
quarter-turn retries and face_index in the official order."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.data.face_kit import face_input, face_kit
from worker.liveportrait.crop import crop_transform, limit_input, warp_crop
from worker.liveportrait.engine import Engine
from worker.liveportrait.face_finder import load_face_finder
from worker.liveportrait.face_models import FaceNets, load_face_nets
from worker.liveportrait.official_face import OfficialFaceFinder


@pytest.fixture(scope="module")
def nets(face_standins: Path) -> FaceNets:
    import torch

    return load_face_nets(face_standins, torch.device("cpu"), threads=2)


def test_without_the_onnx_files_dlib_is_used_with_a_warning(
    tiny_weights_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        engine = Engine.load(tiny_weights_dir, arch="tiny", device="cpu")
    assert engine.faces.name == "dlib"
    assert any("dlib fallback" in r.getMessage() for r in caplog.records)


def test_with_the_onnx_files_the_official_pipeline_is_used(face_standins: Path) -> None:
    import torch

    assert load_face_finder(face_standins, torch.device("cpu")).name == "official"


def test_face_index_counts_in_the_official_order(nets: FaceNets) -> None:
    limited, _ = limit_input(face_input("in3"))
    finder = OfficialFaceFinder(nets)
    boxes = face_kit()["in3_faces_bbox"]
    for index in (0, 1, 5):
        found = finder.find(limited, face_index=index)
        assert found.count == len(boxes)
        assert found.face is not None
        np.testing.assert_array_equal(np.array(found.face.box, dtype=np.float32), boxes[index])
    past = finder.find(limited, face_index=len(boxes))
    assert past.count == len(boxes) and past.face is None


class _BlindUpright:
    """The stand-in detector, made to find nothing on its first call (the upright pass)."""

    def __init__(self, nets: FaceNets) -> None:
        self.nets = nets
        self.calls = 0

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        self.calls += 1
        outputs = self.nets.detector(blob)
        if self.calls == 2:  # the first call after the warm-up
            outputs = [np.zeros_like(o) if i < 3 else o for i, o in enumerate(outputs)]
        return outputs


def test_a_sideways_photo_is_found_turned_and_mapped_back(nets: FaceNets) -> None:
    upright = face_input("in1")
    sideways = np.ascontiguousarray(np.rot90(upright, -1))  # the photo saved turned clockwise
    blind = OfficialFaceFinder(FaceNets(_BlindUpright(nets), nets.landmark106, nets.landmark203, "test"))
    found = blind.find(sideways)
    assert found.face is not None and found.face.found_by == "turned 90°"
    # The same face found directly on the photo turned back, with its points mapped onto the
    # sideways photo: x' = W' - 1 - y, y' = x for one clockwise turn.
    direct = OfficialFaceFinder(nets).find(upright).face
    assert direct is not None
    width = sideways.shape[1]
    expected = np.stack([width - 1 - direct.landmarks[:, 1], direct.landmarks[:, 0]], axis=1)
    np.testing.assert_allclose(found.face.landmarks, expected, atol=1e-3)
    # The crop turns the face upright by its own axis: both crops show the same face.
    crop_sideways = warp_crop(sideways, crop_transform(found.face.landmarks)[0], 512)
    crop_upright = warp_crop(upright, crop_transform(direct.landmarks)[0], 512)
    assert np.abs(crop_sideways.astype(int) - crop_upright.astype(int)).mean() < 2.0


def test_nothing_found_in_any_turn(nets: FaceNets) -> None:
    flat = np.full((300, 400, 3), 128, np.uint8)
    found = OfficialFaceFinder(nets).find(flat)
    assert found.count == 0 and found.face is None
