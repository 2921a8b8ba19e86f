"""The official face pipeline, stage by stage, against the face kit's vectors (shared/face-kit,
carried in tests/data/face_kit): detector input and outputs, candidates, NMS, the face order, the
106 points, the crops, the 203 points, the ratios, and the default request end to end.

Tolerances are the kit's: indices and counts exact (rows with exactly equal scores compared as
a set, since the official sort is numpy's unstable argsort), the stand-ins' boxes, keypoints and
landmarks bit for bit, scores within 1e-6, matrices and ratios within 1e-5 relative, uint8 crops
within 1 grey level, the final image within 2.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.edit_params import EditParams
from tests.data.face_kit import decode_png, face_input, face_kit
from worker.liveportrait import landmarks, scrfd
from worker.liveportrait.crop import limit_input
from worker.liveportrait.engine import Engine

INPUTS = ("in1", "in2", "in3", "in4")
# The nine detector outputs in the file's order: scores, boxes, keypoints for strides 8, 16, 32.
RAW_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
REL = 1e-5


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def rel_err(actual: Any, expected: np.ndarray) -> float:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
    return float(np.abs(a - e).max() / max(float(np.abs(e).max()), 1e-12))


def rows_up_to_ties(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`rows` with each run of exactly equal scores sorted, so two official orders compare equal."""
    out = np.array(rows, copy=True)
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and scores[end + 1] == scores[start]:
            end += 1
        block = out[start : end + 1]
        out[start : end + 1] = block[np.lexsort(block.reshape(len(block), -1).T[::-1])]
        start = end + 1
    return out


def detection_mismatches(trace: dict[str, Any], kit: Any, name: str) -> list[str]:
    """The detection stages where `trace` differs from the kit's input `name` (empty: all agree)."""
    k = f"{name}_"
    bad = []
    if sha(trace["det_img"]) != str(kit[k + "det_img_sha256"]):
        bad.append("det_img")
    blob = scrfd.blob_of(trace["det_img"])
    if sha(blob) != str(kit[k + "det_blob_sha256"]):
        bad.append("det_blob")
    if trace["det_scale"] != float(kit[k + "det_scale"]):
        bad.append("det_scale")
    for i, raw in enumerate(RAW_NAMES):
        out = np.asarray(trace["raw_outputs"][i], dtype=np.float32)
        if i >= 3 and sha(out) != str(kit[f"{k}raw_{raw}_sha256"]):  # boxes and keypoints: bit for bit
            bad.append(f"raw_{raw}")
    for stride in scrfd.STRIDES:
        s = f"s{stride}"
        if np.abs(trace[f"raw_scores_{s}"] - kit[f"{k}raw_scores_{s}"]).max() > 1e-6:
            bad.append(f"raw_scores_{s}")
        if not np.array_equal(trace[f"pos_{s}"], kit[f"{k}pos_{s}"]):
            bad.append(f"pos_{s}")
            continue
        for what in ("boxes", "kps"):
            if not np.array_equal(trace[f"raw_{what}_{s}_pos"], kit[f"{k}raw_{what}_{s}_pos"]):
                bad.append(f"raw_{what}_{s}_pos")
    pre, ref = trace["pre_nms_dets"], kit[k + "pre_nms_dets"]
    if pre.shape != ref.shape:
        return [*bad, "candidates"]
    if np.abs(pre[:, 4] - ref[:, 4]).max() > 1e-6:
        bad.append("pre_nms_scores")
    if not np.array_equal(rows_up_to_ties(pre[:, :4], ref[:, 4]), rows_up_to_ties(ref[:, :4], ref[:, 4])):
        bad.append("pre_nms_boxes")
    dets = pre[trace["keep"]]
    ref_dets = kit[k + "dets"]
    if dets.shape != ref_dets.shape:
        return [*bad, "keep"]
    if not np.array_equal(
        rows_up_to_ties(dets[:, :4], ref_dets[:, 4]), rows_up_to_ties(ref_dets[:, :4], ref_dets[:, 4])
    ):
        bad.append("dets")
    if not np.array_equal(trace["faces_bbox"], kit[k + "faces_bbox"]):
        bad.append("faces_bbox")
    if not np.array_equal(trace["faces_kps"], kit[k + "faces_kps"]):
        bad.append("faces_kps")
    if np.abs(trace["faces_score"] - kit[k + "faces_score"]).max() > 1e-6:
        bad.append("faces_score")
    return bad


def landmark_mismatches(trace: dict[str, Any], kit: Any, name: str) -> list[str]:
    k = f"{name}_"
    bad = []
    for exact in ("lmk106_M", "lmk106_raw", "lmk106", "lmk203_out1", "lmk203_raw", "lmk203"):
        if rel_err(trace[exact], kit[k + exact]) > (0.0 if exact != "lmk106_M" else 1e-12):
            bad.append(exact)
    for image in ("lmk106_input", "lmk203_input"):
        if np.abs(trace[image].astype(int) - kit[k + image].astype(int)).max() > 1:
            bad.append(image)
    for matrix in ("lmk203_crop_M_o2c", "lmk203_crop_M_c2o"):
        if rel_err(trace[matrix], kit[k + matrix]) > REL:
            bad.append(matrix)
    for ratio in ("lip_close_ratio", "eye_close_ratio"):
        if rel_err(trace[ratio], kit[k + ratio]) > REL:
            bad.append(ratio)
    return bad


def crop_mismatches(trace: dict[str, Any], kit: Any, name: str) -> list[str]:
    k = f"{name}_"
    bad = [m for m in ("crop_M_o2c", "crop_M_c2o") if rel_err(trace[m], kit[k + m]) > REL]
    if k + "crop_img512_rows" in kit:
        step = int(kit[k + "crop_img512_rows_step"])
        rows = kit[k + "crop_img512_rows"]
        if np.abs(trace["crop_img512"][::step].astype(int) - rows.astype(int)).max() > 1:
            bad.append("crop_img512")
    elif sha(trace["crop_img512"]) != str(kit[k + "crop_img512_sha256"]):  # carried as a digest only
        bad.append("crop_img512")
    if np.abs(trace["crop_img256"].astype(int) - kit[k + "crop_img256"].astype(int)).max() > 1:
        bad.append("crop_img256")
    return bad


@pytest.fixture(scope="module")
def engine(kit_face_weights: Path) -> Engine:
    return Engine.load(kit_face_weights, device="cpu", threads=2)


@pytest.fixture(scope="module")
def kit() -> Any:
    return face_kit()


def found_trace(engine: Engine, name: str) -> dict[str, Any]:
    """Detection, the 106 points and the 203 points of an input through the engine's finder."""
    limited, _ = limit_input(face_input(name))
    trace: dict[str, Any] = {}
    found = engine.faces.find(limited, trace=trace)
    assert found.face is not None
    engine.faces.lip_ratio(limited, found.face, trace)
    return trace


def test_the_official_pipeline_is_the_default(engine: Engine) -> None:
    assert engine.faces.name == "official"


@pytest.mark.parametrize("name", ["in3", "in4"])
def test_detection_and_landmarks_match_the_kit(engine: Engine, kit: Any, name: str) -> None:
    trace = found_trace(engine, name)
    assert detection_mismatches(trace, kit, name) == []
    assert landmark_mismatches(trace, kit, name) == []


def assert_end_to_end(trace: dict[str, Any], output: np.ndarray, kit: Any, name: str) -> None:
    k = f"{name}_"
    assert sha(trace["limited"]) == str(kit[k + "limited_sha256"])
    assert detection_mismatches(trace, kit, name) == []
    assert landmark_mismatches(trace, kit, name) == []
    assert crop_mismatches(trace, kit, name) == []
    for key in ("x_s", "x_d", "x_d_stitched", "x_d_final"):
        assert rel_err(trace[f"e2e_{key}"], kit[f"{k}e2e_{key}"]) <= 1e-4, key
    assert bool(trace["e2e_lip_zero_applied"]) == bool(kit[k + "e2e_lip_zero_applied"])
    image512 = decode_png(kit[k + "e2e_image512_png"])
    assert np.abs(trace["e2e_image512"].astype(int) - image512.astype(int)).max() <= 1
    # The official output is the limited image; ours keeps an odd input's last row (README).
    height, width = (int(v) for v in kit[k + "e2e_pasteback_shape"][:2])
    ours = output[:height, :width].astype(int)
    if k + "e2e_pasteback_png" in kit:
        assert np.abs(ours - decode_png(kit[k + "e2e_pasteback_png"]).astype(int)).max() <= 2
    else:
        step = int(kit[k + "e2e_pasteback_rows_step"])
        assert np.abs(ours[::step] - kit[k + "e2e_pasteback_rows"].astype(int)).max() <= 2


def test_engine_edit_matches_the_kit_end_to_end(engine: Engine, kit: Any) -> None:
    """in1: lip ratio below 0.03, so lip zero is not applied."""
    trace: dict[str, Any] = {}
    result = engine.edit(png_bytes(face_input("in1")), EditParams(output_format="png"), trace=trace)
    output = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB"))
    assert_end_to_end(trace, output, kit, "in1")
    assert not trace["e2e_lip_zero_applied"]


def test_command_line_matches_the_kit_end_to_end(kit_face_weights: Path, kit: Any, tmp_path: Path) -> None:
    """in2 (odd height, letterboxed, a smaller image): lip zero applied."""
    source, out, trace_file = tmp_path / "in2.png", tmp_path / "out.png", tmp_path / "trace.npz"
    source.write_bytes(png_bytes(face_input("in2")))
    cmd = [
        sys.executable,
        "-m",
        "worker.liveportrait",
        str(source),
        str(out),
        "--weights",
        str(kit_face_weights),
    ]
    # --arch explicitly: the service fixtures may have left ENGINE_ARCH=tiny in the environment.
    options = ["--arch", "full", "--device", "cpu", "--threads", "2", "--trace", str(trace_file)]
    subprocess.run([*cmd, *options], check=True)
    with np.load(trace_file) as data:
        trace: dict[str, Any] = {key: data[key] for key in data.files}
    trace["raw_outputs"] = [trace[f"raw_outputs_{i}"] for i in range(9)]
    trace["det_scale"] = float(trace["det_scale"])
    output = np.asarray(Image.open(out).convert("RGB"))
    assert output.shape == tuple(int(v) for v in kit["in2_input_shape"])
    assert_end_to_end(trace, output, kit, "in2")
    assert trace["e2e_lip_zero_applied"]


def test_changed_rules_are_caught(engine: Engine, kit: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparisons above fail for a changed threshold, NMS rule or landmark mapping."""
    monkeypatch.setattr(scrfd, "DET_THRESHOLD", 0.1)
    assert "pos_s8" in detection_mismatches(found_trace(engine, "in3"), kit, "in3")
    monkeypatch.setattr(scrfd, "DET_THRESHOLD", 0.15)
    monkeypatch.setattr(scrfd, "NMS_THRESHOLD", 0.5)
    assert {"keep", "dets"} & set(detection_mismatches(found_trace(engine, "in3"), kit, "in3"))
    monkeypatch.setattr(scrfd, "NMS_THRESHOLD", 0.4)
    monkeypatch.setattr(landmarks, "LMK203_SCALE", 1.6)
    bad = landmark_mismatches(found_trace(engine, "in3"), kit, "in3")
    assert {"lmk203", "lip_close_ratio"} <= set(bad)
    monkeypatch.setattr(landmarks, "LMK203_SCALE", 1.5)
    assert landmark_mismatches(found_trace(engine, "in3"), kit, "in3") == []
