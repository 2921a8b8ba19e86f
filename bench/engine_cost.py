"""What an edit costs outside the networks, stage by stage, on a 1 MP and a 12 MP phone-like JPEG.

Part of `make bench-engine` (bench/engine.py; `--cost-only` for this table alone). The networks
are the narrow "tiny" stand-ins by default: the stages measured here do not depend on them, and
the table then takes seconds instead of minutes. `--cost-weights DIR` measures a real weights
folder instead (full architecture, and whichever face pipeline that folder holds).

CPU figures are the process's CPU time over each stage, all threads included (OpenCV's and
onnxruntime's pools, and any spinning of torch's or onnxruntime's idle threads), which is what a
stage takes from a machine whose cores are shared; wall figures are `EditResult.timings`.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
from PIL import Image

import worker.liveportrait.engine as engine_module
from core.edit_params import EditParams
from tests.data import photo
from worker.liveportrait.engine import Engine
from worker.liveportrait.face_files import face_files_present
from worker.liveportrait.stage_timer import StageTimer
from worker.liveportrait.testing import write_random_weights

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"

# (label, width, height): 4:3 like a phone camera; 1200x900 is 1.08 MP.
SIZES = (("1 MP", 1200, 900), ("12 MP", 4000, 3000))
OUTSIDE = ("decode", "limit", "detect", "lip_ratio", "crop", "pasteback", "encode")
FACE_PIPELINE = ("detect", "lip_ratio")
NETWORKS = ("appearance", "motion", "warping", "decoder")
# Sensor-like noise: an upscaled 512 px photo is so smooth that its JPEG would be a fraction of a
# phone's (entropy decoding is a good part of a decode). With it the 12 MP file is ~2 MB.
NOISE_SIGMA = 4.0


def phone_jpeg(width: int, height: int) -> bytes:
    """The kit's astronaut enlarged to height x height (bicubic), mirrored out to width at both
    sides, with seeded noise, as a quality-90 JPEG."""
    square = cv2.resize(photo("astronaut"), (height, height), interpolation=cv2.INTER_CUBIC)
    left = (width - height) // 2
    wide = cv2.copyMakeBorder(square, 0, 0, left, width - height - left, cv2.BORDER_REFLECT_101)
    noise = np.random.default_rng(0).normal(0.0, NOISE_SIGMA, wide.shape).astype(np.float32)
    noisy = np.clip(wide + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=90)
    return buf.getvalue()


class CpuStageTimer(StageTimer):
    """A StageTimer that also records each stage's process CPU time, as "cpu:<stage>"."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.process_time()
        with super().stage(name):
            yield
        key = f"cpu:{name}"
        self.timings[key] = self.timings.get(key, 0.0) + time.process_time() - start


@dataclass
class Setup:
    label: str
    engine: Engine


def _face_standins(dest: Path) -> bool:
    """Writes the face kit's seed-0 stand-in ONNX files into dest (the project's own generator)."""
    from worker.liveportrait.face_standins import write_face_standins

    write_face_standins(dest, seed=0)
    return True


def setups(weights: Path | None, threads: int | None) -> list[Setup]:
    if weights is not None:
        engine = Engine.load(weights, threads=threads, device="cpu")
        return [Setup(f"{weights} (full networks, {engine.faces.name} faces)", engine)]
    tiny = CACHE / "tiny-seed0"
    if not (tiny / "retargeting_models").is_dir():
        write_random_weights(tiny, arch="tiny", seed=0)
    dlib = Engine.load(tiny, arch="tiny", threads=threads, device="cpu")
    out = [Setup("dlib fallback, tiny networks", dlib)]
    official = CACHE / "tiny-seed0-face"
    if not face_files_present(official):
        write_random_weights(official, arch="tiny", seed=0)
        if not _face_standins(official):
            print("(official face pipeline not measured: no stand-in generator found)")
            return out
    engine = Engine.load(official, arch="tiny", threads=threads, device="cpu")
    # Stand-in ONNX files are a few MB against the official 16.9 + 5.0 + ~115 MB: their network
    # time is not the official files'; everything around them is.
    out.append(Setup("official face pipeline (stand-in ONNX files), tiny networks", engine))
    return out


def _median(runs: list[dict[str, float]], keys: tuple[str, ...], prefix: str) -> float:
    return statistics.median(sum(r.get(prefix + k, 0.0) for k in keys) for r in runs)


def _cpu(runs: list[dict[str, float]], keys: tuple[str, ...]) -> str:
    # warping and decoder are timed as one batch's shared pass, without CPU time of their own
    if any(k in NETWORKS and f"cpu:{k}" not in runs[0] for k in keys):
        return "-"
    return f"{1000 * _median(runs, keys, 'cpu:'):.1f}"


def measure(engine: Engine, data: bytes, runs: int) -> list[dict[str, float]]:
    params = EditParams(smile=1.0, blink=-10.0, output_format="jpeg")
    with mock.patch.object(engine_module, "StageTimer", CpuStageTimer):
        engine.edit(data, params)  # warm-up: lazy detector load, first-call allocations
        return [engine.edit(data, params).timings for _ in range(runs)]


def report(weights: Path | None, threads: int | None, runs: int) -> None:
    inputs = [(label, phone_jpeg(w, h), w, h) for label, w, h in SIZES]
    print(
        "\ncost of an edit outside the networks: ms per stage, median of "
        f"{runs} edits after a warm-up; cpu = process CPU time (all threads), wall = elapsed"
    )
    for label, data, w, h in inputs:
        print(f"  {label}: {w}x{h} JPEG q90, {len(data) / 1e6:.2f} MB (astronaut enlarged, mirrored, noise)")
    for setup in setups(weights, threads):
        results = [measure(setup.engine, data, runs) for _, data, _, _ in inputs]
        print(f"\n{setup.label}")
        head = "".join(f"{label + ' cpu':>13}{'wall':>8}" for label, *_ in inputs)
        print(f"{'stage':<24}{head}")
        rows = [(s, (s,)) for s in OUTSIDE]
        rows += [("outside the networks", OUTSIDE), ("face pipeline", FACE_PIPELINE)]
        rows += [(s, (s,)) for s in NETWORKS] + [("networks", NETWORKS)]
        for name, keys in rows:
            cells = "".join(f"{_cpu(r, keys):>13}{1000 * _median(r, keys, ''):>8.1f}" for r in results)
            print(f"{name:<24}{cells}")
        totals = "".join(f"{'':>13}{1000 * _median(r, ('total',), ''):>8.1f}" for r in results)
        print(f"{'end to end':<24}{totals}")
    print(
        "(sums are medians of each edit's sum; 'face pipeline' = detect + lip_ratio; the networks' "
        "cpu includes torch's own threads)"
    )
