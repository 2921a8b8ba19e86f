"""Loading the face pipeline's three ONNX networks onto the engine's device.

On the CPU they run in onnxruntime. On CUDA they run as torch graphs on the engine's own GPU
(`onnx_torch`), so a worker needs no second CUDA runtime and the face models share the device the
networks were placed on; a graph that the torch runner cannot take falls back to onnxruntime
(its CUDA provider when installed, else the CPU) with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import WeightsError
from .face_files import DETECTOR_FILE, LANDMARK106_FILE, LANDMARK203_FILE

log = logging.getLogger(__name__)

# One call of a network: its single input in, all its outputs (in the file's order) out.
OnnxNet = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class FaceNets:
    detector: OnnxNet
    landmark106: OnnxNet
    landmark203: OnnxNet
    backend: str  # "onnxruntime" or "torch", for the logs and the benchmarks


def _onnxruntime_net(path: Path, device: torch.device, threads: int | None) -> OnnxNet:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The detector's declared output shapes are traced at 640x640; at 512 onnxruntime warns on
    # every call that they differ. Errors only, as InsightFace sets it.
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    # Idle pool threads would otherwise spin after each call and take the cores from the next
    # stage (the appearance network: 39 -> 129 ms of CPU after detection, BENCHMARKS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[str | tuple[str, dict[str, object]]] = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid files
        raise WeightsError(f"cannot load face model {path}: {exc}") from exc
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(out) for out in session.run(None, {name: x})]

    return run


def _torch_net(path: Path, device: torch.device) -> OnnxNet:
    from .onnx_torch import TorchOnnxModel

    model = TorchOnnxModel(path, device=device)
    name = model.input_names[0]

    def run(x: np.ndarray) -> list[np.ndarray]:
        return [out.float().cpu().numpy() for out in model.run({name: x})]

    return run


def _load_one(path: Path, device: torch.device, threads: int | None) -> tuple[OnnxNet, str]:
    if not path.is_file():
        raise WeightsError(f"face model not installed: {path} is missing (run `make weights`)")
    if device.type == "cuda":
        from .onnx_torch import UnsupportedOnnxGraph

        try:
            return _torch_net(path, device), "torch"
        except UnsupportedOnnxGraph as exc:
            log.warning("%s runs in onnxruntime instead of on %s: %s", path.name, device, exc)
    return _onnxruntime_net(path, device, threads), "onnxruntime"


def load_face_nets(weights_dir: Path | str, device: torch.device, threads: int | None = None) -> FaceNets:
    root = Path(weights_dir)
    detector, b1 = _load_one(root / DETECTOR_FILE, device, threads)
    lmk106, b2 = _load_one(root / LANDMARK106_FILE, device, threads)
    lmk203, b3 = _load_one(root / LANDMARK203_FILE, device, threads)
    backends = sorted({b1, b2, b3})
    return FaceNets(detector, lmk106, lmk203, backend="+".join(backends))
