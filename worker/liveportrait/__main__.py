"""Command line: edit one portrait.

    python -m worker.liveportrait INPUT_IMAGE OUTPUT_IMAGE --weights DIR [--params JSON]

JSON holds any endpoint fields besides `image_url`, e.g. '{"smile": 1, "output_format": "png"}'
(or @file.json). Prints the output's width, height and timings; on bad input it exits non-zero
with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from core.edit_params import EditParams
from core.input_errors import InputRejected

from .errors import WeightsError

EXTENSION_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def parse_params(text: str | None, output: Path) -> EditParams:
    raw: object = {}
    if text:
        if text.startswith("@"):
            text = Path(text[1:]).read_text()
        raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("--params must be a JSON object")
    if "image_url" in raw:
        raise ValueError("image_url is not accepted here; pass the image as INPUT_IMAGE")
    if "output_format" not in raw and output.suffix.lower() in EXTENSION_FORMATS:
        raw["output_format"] = EXTENSION_FORMATS[output.suffix.lower()]
    return EditParams.model_validate(raw)


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "params"
        parts.append(f"{where}: {err['msg']}")
    return "invalid --params: " + "; ".join(parts)


def write_trace(path: Path, trace: dict[str, object]) -> None:
    import numpy as np

    arrays = {}
    for key, value in trace.items():
        if isinstance(value, list):  # the detector's raw outputs
            arrays.update({f"{key}_{i}": np.asarray(v) for i, v in enumerate(value)})
        else:
            arrays[key] = np.asarray(value)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.liveportrait", description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path, help="portrait to edit (JPEG, PNG, WebP or HEIC)")
    parser.add_argument("output", type=Path, help="where to write the edited image")
    parser.add_argument(
        "--weights",
        type=Path,
        default=Path(os.environ.get("WEIGHTS_DIR", "weights")),
        help="folder laid out as the official liveportrait/ (default: $WEIGHTS_DIR or ./weights)",
    )
    parser.add_argument("--params", help="JSON object of endpoint fields, or @file.json")
    parser.add_argument(
        "--device", default=os.environ.get("DEVICE", "auto"), help="auto, cpu, cuda or cuda:N"
    )
    parser.add_argument("--half", action="store_true", help="float16 autocast on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--arch", default=os.environ.get("ENGINE_ARCH", "full"), help="full (official) or tiny"
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="also write every stage's arrays (face detection, landmarks, crops, keypoints, images) "
        "to this .npz, under the face conformance kit's names",
    )
    args = parser.parse_args(argv)

    try:
        params = parse_params(args.params, args.output)
    except ValidationError as exc:
        return fail(describe_validation(exc), 2)
    except (ValueError, OSError) as exc:  # JSONDecodeError is a ValueError
        return fail(f"invalid --params: {exc}", 2)
    try:
        data = args.input.read_bytes()
    except OSError as exc:
        return fail(f"cannot read {args.input}: {exc.strerror or exc}", 2)

    from .engine import Engine  # heavy imports only once the arguments are known to be good

    try:
        engine = Engine.load(
            args.weights, device=args.device, half=args.half, threads=args.threads, arch=args.arch
        )
        trace: dict[str, object] | None = {} if args.trace else None
        result = engine.edit(data, params, trace=trace)
    except (InputRejected, WeightsError, ValueError) as exc:
        return fail(str(exc))
    if trace is not None:
        try:
            write_trace(args.trace, trace)
        except OSError as exc:
            return fail(f"cannot write {args.trace}: {exc.strerror or exc}")
    try:
        args.output.write_bytes(result.data)
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror or exc}")
    stages = " ".join(f"{k}={v:.3f}s" for k, v in result.timings.items() if k != "total")
    print(
        f"width={result.width} height={result.height} format={params.output_format} "
        f"time={result.timings['total']:.3f}s device={engine.device}"
    )
    print(f"stages: {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
