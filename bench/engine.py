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
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.liveportrait.engine import Engine, PortraitCache  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true")
    args = parser.parse_args()

    engine = Engine.load(weights_dir(), device=args.device, half=args.half, threads=args.threads)
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
