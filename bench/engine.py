"""`make bench-engine`: per-stage and end-to-end timings of one edit, beside the official code's.

Weights: the conformance kit's seed-0 checkpoints, regenerated once into .cache/ by the project's
own generator (worker/liveportrait/kit_weights.py). Portrait: the kit's astronaut (tests/data).

    python bench/engine.py [--runs 5] [--threads N] [--device auto|cpu|cuda] [--half] [--compile]
                           [--batch 1,4,16] [--cost-runs 7] [--cost-only] [--cost-weights DIR]

Last, the CPU an edit costs outside the networks, stage by stage, on a 1 MP and a 12 MP JPEG
(bench/engine_cost.py; --cost-only prints that table alone).

With --half and/or --compile the script first prints that configuration's conformance error: its
output against a plain float32 eager run of the same engine on the same input, and (with the kit)
against the official output (the kit's vectors carried in tests/data) as
tests/worker/liveportrait/test_conformance.py measures it. On a GPU host:

    python bench/engine.py --device cuda --half --batch 1,4,16
    python bench/engine.py --device cuda --half --compile --batch 1,4,16
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import engine_cost  # noqa: E402
from core.edit_params import EXPRESSION_FIELDS, EditParams  # noqa: E402
from tests.data import kit_vectors, photo  # noqa: E402
from worker.liveportrait.engine import BatchItem, Engine  # noqa: E402
from worker.liveportrait.kit_weights import write_kit_weights  # noqa: E402
from worker.liveportrait.portrait_cache import PortraitCache  # noqa: E402
from worker.liveportrait.stage_timer import StageTimer  # noqa: E402

CACHE = ROOT / ".cache"
# The official implementation, float32, 2 threads, on this 2-core machine (kit README, median of 5).
OFFICIAL_CPU = {"appearance": 2.0, "motion": 2.3, "warping": 6.8, "decoder": 19.0}
STAGES = (
    "decode",
    "limit",
    "detect",
    "crop",
    "appearance",
    "motion",
    "warping",
    "decoder",
    "pasteback",
    "encode",
)
KIT_EDITS = (0, 1, 2, 3)
# tests/worker/liveportrait/test_conformance.py: decoded image within the kit's float16 rounding
# + 1e-4, uint8 within 1
KIT_FLOAT_LIMIT = 5e-4 + 1e-4


def weights_dir() -> Path:
    out = CACHE / "kit-seed0"
    if not (out / "retargeting_models" / "stitching_retargeting_module.pth").is_file():
        print("generating the kit's seed-0 weights into", out, flush=True)
        write_kit_weights(out, seed=0)
    return out


def portrait() -> tuple[bytes, EditParams]:
    buf = io.BytesIO()
    Image.fromarray(photo("astronaut")).save(buf, "PNG")
    return buf.getvalue(), EditParams(smile=1.0, blink=-10.0, output_format="jpeg")


def sync(engine: Engine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


def to_u8(image: torch.Tensor) -> np.ndarray:
    """As tests/worker/liveportrait/test_conformance.py (and the official code): clip, scale, truncate."""
    return (image[0].float().permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).clip(0, 255).astype(np.uint8)


def kit_errors(engine: Engine) -> tuple[float, int]:
    """Largest deviation of the decoded image from the official one over the kit's edits, as the
    conformance test measures it (W and G on the kit's keypoints and the feature volume of its
    input, on the elements tests/data carries), as a float and in grey levels of the uint8 crop,
    in this configuration (device, precision, compilation): the cost of a speed option in accuracy."""
    worst_float, worst_u8 = 0.0, 0
    kit = kit_vectors()
    with torch.inference_mode():
        feature = engine.nets.appearance(torch.from_numpy(kit["input_tensor"]).to(engine.device))
    x_s = torch.from_numpy(kit["x_s"]).to(engine.device)
    for i in KIT_EDITS:
        x_d = torch.from_numpy(kit[f"edit{i}_x_d_stitched"]).to(engine.device)
        with torch.inference_mode(), engine.autocast():
            out = engine.nets.decoder(engine.nets.warping(feature, kp_driving=x_d, kp_source=x_s)["out"])
        name = f"edit{i}_image_float"
        got = kit.pick(name, out.float().cpu().numpy())
        worst_float = max(worst_float, float(np.abs(got - kit.expected(name).astype(np.float32)).max()))
        name = f"edit{i}_image_u8"
        diff = np.abs(kit.pick(name, to_u8(out)).astype(int) - kit.expected(name).astype(int))
        worst_u8 = max(worst_u8, int(diff.max()))
    return worst_float, worst_u8


def no_crop_errors(engine: Engine) -> list[int]:
    """Grey levels between the official decoded image and the whole edit through `Engine.edit`
    with flag_do_crop=false on the kit's 256x256 input crop, one figure per kit edit."""
    kit = kit_vectors()
    buf = io.BytesIO()
    Image.fromarray(kit["input_crop256"]).save(buf, "PNG")
    errors = []
    for i in KIT_EDITS:
        values = dict(zip(EXPRESSION_FIELDS, kit[f"edit{i}_params"].tolist(), strict=True))
        params = EditParams(**values, flag_do_crop=False, flag_lip_zero=False, output_format="png")
        out = np.asarray(Image.open(io.BytesIO(engine.edit(buf.getvalue(), params).data)).convert("RGB"))
        name = f"edit{i}_image_u8"
        errors.append(int(np.abs(kit.pick(name, out).astype(int) - kit.expected(name).astype(int)).max()))
    return errors


def outputs(engine: Engine, rgb: np.ndarray, params: EditParams) -> tuple[np.ndarray, np.ndarray, float]:
    """One edit through the engine's own pipeline: the decoded crop (float, before the uint8
    conversion), the final uint8 image (after paste-back) and the seconds the first took."""
    timer = StageTimer(None, None)
    start = time.perf_counter()
    prep = engine.prepare(rgb, params, timer)
    x_d = engine.driving_keypoints(prep, params)
    with torch.inference_mode(), engine.autocast():
        warped = engine.nets.warping(prep.feature, kp_driving=x_d, kp_source=prep.x_s)["out"]
        decoded = engine.nets.decoder(warped).float().cpu().numpy()
    elapsed = time.perf_counter() - start
    final = engine.render(prep, params, timer)
    return decoded, final, elapsed


def conformance(engine: Engine, args: argparse.Namespace, data: bytes, params: EditParams) -> None:
    """The error that --half / --compile cost: this configuration against float32 eager."""
    print(
        f"conformance of this configuration (device={engine.device} half={engine.half} "
        f"compile={args.compile}) against float32 eager on the same device:",
        flush=True,
    )
    if args.half and not engine.half:
        print(f"  note: --half has no effect on {engine.device} (the engine's float16 autocast is CUDA-only)")
    reference = Engine.load(weights_dir(), device=str(engine.device), threads=args.threads)
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    got_float, got_u8, first = outputs(engine, rgb, params)
    print(f"  first edit through this configuration (includes compilation, if any): {first:.1f} s")
    ref_float, ref_u8, _ = outputs(reference, rgb, params)
    diff = np.abs(got_float - ref_float)
    print(
        f"  decoded crop {tuple(got_float.shape[1:])} float: max |diff| {diff.max():.2e}, "
        f"mean |diff| {diff.mean():.2e}"
    )
    diff_u8 = np.abs(got_u8.astype(int) - ref_u8.astype(int))
    print(
        f"  final image {got_u8.shape} uint8 (after paste-back): max |diff| {diff_u8.max()} grey levels, "
        f"mean {diff_u8.mean():.4f}, {100 * np.count_nonzero(diff_u8) / diff_u8.size:.2f}% of values differ"
    )
    got = kit_errors(engine)
    ref = kit_errors(reference)
    print(
        f"  vs the kit's official output (edits {KIT_EDITS[0]}-{KIT_EDITS[-1]}, as the conformance "
        f"test): "
        f"decoded image max |diff| {got[0]:.2e} (float32 eager {ref[0]:.2e}, test limit "
        f"{KIT_FLOAT_LIMIT:.0e}); uint8 crop max |diff| {got[1]} grey levels (float32 eager {ref[1]}, "
        f"test limit 1)"
    )
    del reference
    if engine.device.type == "cuda":
        torch.cuda.empty_cache()
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true", help="float16 autocast (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the warping module and decoder")
    parser.add_argument(
        "--batch",
        default=None,
        help="comma-separated batch sizes for the throughput table (1,4; 1,4,16 on cuda)",
    )
    parser.add_argument("--cost-runs", type=int, default=7, help="edits per input for the cost table")
    parser.add_argument("--cost-only", action="store_true", help="only the cost table outside the networks")
    parser.add_argument(
        "--cost-weights",
        type=Path,
        default=None,
        help="a weights folder for the cost table (default: tiny stand-ins, dlib and the face kit's)",
    )
    args = parser.parse_args()
    if args.cost_only:
        engine_cost.report(args.cost_weights, args.threads, args.cost_runs)
        return

    engine = Engine.load(
        weights_dir(), device=args.device, half=args.half, threads=args.threads, compile_networks=args.compile
    )
    data, params = portrait()
    if args.half or args.compile:
        conformance(engine, args, data, params)
    else:
        error, _ = kit_errors(engine)
        print(f"conformance of this configuration: decoded image max |diff| vs the kit = {error:.2e}")
        errors = ", ".join(str(e) for e in no_crop_errors(engine))
        print(f"flag_do_crop=false through Engine.edit on the kit's crop, edits 0-3: {errors} grey levels")
    engine.edit(data, params)  # warm-up: lazy detector load, allocator, kernels
    runs = [engine.edit(data, params).timings for _ in range(args.runs)]

    med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in (*STAGES, "total")}
    print(
        f"device={engine.device} half={engine.half} compile={args.compile} threads={torch.get_num_threads()} "
        f"runs={args.runs} torch={torch.__version__}"
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
    if engine.device.type == "cuda":
        print("(on cuda the stage timings are not synchronised: only 'end to end' and the batch table count)")

    batches = args.batch or ("1,4,16" if engine.device.type == "cuda" else "1,4")
    repeats = 3 if engine.device.type == "cuda" else 1
    print(f"\n{'batch':>5}{'edits/s':>10}{'latency (s)':>14}{'first call (s)':>16}   (median of {repeats})")
    for size in (int(b) for b in batches.split(",")):
        items = [BatchItem(data, params.model_copy(update={"smile": 0.1 * i})) for i in range(size)]
        start = time.perf_counter()
        engine.edit_batch(items)  # warm-up (and compilation for this shape)
        sync(engine)
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.edit_batch(items)
            sync(engine)
            times.append(time.perf_counter() - start)
        elapsed = statistics.median(times)
        print(f"{size:>5}{size / elapsed:>10.3f}{elapsed:>14.3f}{first:>16.3f}", flush=True)

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
    engine_cost.report(args.cost_weights, args.threads, args.cost_runs)


if __name__ == "__main__":
    main()
