"""`make bench-engine`: per-stage and end-to-end timings of one edit, beside the official code's.

Weights: the conformance kit's seed-0 checkpoints (generated once into .cache/), or, without the
kit, stand-in weights of the same full architecture (timings do not depend on the values).
Portrait: the kit's astronaut when present, else a synthetic image edited without cropping.

    python bench/engine.py [--runs 5] [--threads N] [--device auto|cpu|cuda] [--half]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.liveportrait.engine import BatchItem, Engine, PortraitCache  # noqa: E402
from worker.liveportrait.params import EditParams  # noqa: E402
from worker.liveportrait.testing import write_random_weights  # noqa: E402

KIT = ROOT.parent / "shared" / "liveportrait-kit"
CACHE = ROOT / ".cache"
# The official implementation, float32, 2 threads, on this 2-core machine (kit README, median of 5).
OFFICIAL_CPU = {"appearance": 2.0, "motion": 2.3, "warping": 6.8, "decoder": 19.0}
STAGES = ("decode", "detect", "crop", "appearance", "motion", "warping", "decoder", "pasteback", "encode")


def weights_dir() -> Path:
    if (KIT / "make_weights.py").is_file():
        out = CACHE / "kit-seed0"
        if not (out / "retargeting_models" / "stitching_retargeting_module.pth").is_file():
            print("generating the kit's seed-0 weights into", out, flush=True)
            subprocess.run(
                [sys.executable, str(KIT / "make_weights.py"), str(out), "--seed", "0"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        return out
    out = CACHE / "bench-full-random"
    if not (out / "retargeting_models" / "stitching_retargeting_module.pth").is_file():
        write_random_weights(out, arch="full", seed=0)
    return out


def portrait() -> tuple[bytes, EditParams]:
    params = {"smile": 1.0, "blink": -10.0, "output_format": "jpeg"}
    if (KIT / "vectors_seed0.npz").is_file():
        with np.load(KIT / "vectors_seed0.npz") as kit:
            image = kit["source_image"]
    else:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
        params.update(flag_do_crop=False, flag_lip_zero=False)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue(), EditParams(**params)


def kit_error(engine: Engine) -> float:
    """Largest deviation of the decoded image from the official one (kit edit 0) in this
    configuration (device, precision, compilation): the cost of a speed option in accuracy."""
    with np.load(KIT / "vectors_seed0.npz") as kit:
        feature = torch.from_numpy(kit["feature_3d"]).to(engine.device)
        x_s = torch.from_numpy(kit["x_s"]).to(engine.device)
        x_d = torch.from_numpy(kit["edit0_x_d_stitched"]).to(engine.device)
        expected = kit["edit0_image_float"].astype(np.float32)
    with torch.inference_mode(), engine.autocast():
        out = engine.nets.decoder(engine.nets.warping(feature, kp_driving=x_d, kp_source=x_s)["out"])
    return float(np.abs(out.float().cpu().numpy() - expected).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the warping module and decoder")
    parser.add_argument("--batch", default="1,4", help="batch sizes for the throughput table")
    args = parser.parse_args()

    engine = Engine.load(
        weights_dir(), device=args.device, half=args.half, threads=args.threads, compile_networks=args.compile
    )
    if (KIT / "vectors_seed0.npz").is_file():
        error = kit_error(engine)
        print(f"conformance of this configuration: decoded image max |diff| vs the kit = {error:.2e}")
    data, params = portrait()
    engine.edit(data, params)  # warm-up: lazy detector load, allocator, kernels
    runs = [engine.edit(data, params).timings for _ in range(args.runs)]

    med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in (*STAGES, "total")}
    print(
        f"device={engine.device} half={engine.half} threads={torch.get_num_threads()} runs={args.runs} "
        f"torch={torch.__version__}"
    )
    print(f"{'stage':<12}{'this engine (s)':>17}{'official CPU (s)':>18}{'speed-up':>10}")
    for stage in STAGES:
        official = OFFICIAL_CPU.get(stage)
        ratio = f"{official / med[stage]:.1f}x" if official and med[stage] > 0 else ""
        print(f"{stage:<12}{med[stage]:>17.3f}{(f'{official:.1f}' if official else '-'):>18}{ratio:>10}")
    nets = sum(med[s] for s in OFFICIAL_CPU)
    official_total = sum(OFFICIAL_CPU.values())
    print(f"{'networks':<12}{nets:>17.3f}{official_total:>18.1f}{official_total / nets:>9.1f}x")
    print(f"{'end to end':<12}{med['total']:>17.3f}{'~30':>18}")

    print(f"\n{'batch':>5}{'edits/s':>10}{'latency (s)':>14}")
    for size in (int(b) for b in args.batch.split(",")):
        items = [BatchItem(data, params.model_copy(update={"smile": 0.1 * i})) for i in range(size)]
        engine.edit_batch(items)  # warm-up (and compilation for this shape)
        start = time.perf_counter()
        engine.edit_batch(items)
        elapsed = time.perf_counter() - start
        print(f"{size:>5}{size / elapsed:>10.3f}{elapsed:>14.3f}")

    # the slider workflow: the same portrait again with another expression
    engine.cache = PortraitCache(4)
    engine.edit(data, params)
    again = [
        engine.edit(data, params.model_copy(update={"smile": 0.5 + 0.1 * i})).timings["total"]
        for i in range(3)
    ]
    repeat = statistics.median(again)
    print(
        f"repeated edit of the same portrait (prepared-portrait cache): {repeat:.3f} s, "
        f"saves {med['total'] - repeat:.3f} s ({100 * (1 - repeat / med['total']):.0f}%)"
    )


if __name__ == "__main__":
    main()
