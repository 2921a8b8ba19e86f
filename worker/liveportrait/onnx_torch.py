"""Running an ONNX graph with torch, on any torch device, without onnxruntime.

The face pipeline's three ONNX networks run in onnxruntime on the CPU. On CUDA they run here, on
the engine's own device: no second CUDA runtime in the worker, and no copies between two
libraries' memory. The interpreter is small on purpose: it evaluates the standard operators that
CNN exports such as InsightFace's use (`onnx_torch_ops`, `onnx_torch_shape`, `onnx_torch_nn`),
node by node in the file's order, and refuses at load time, with `UnsupportedOnnxGraph`, any op
or attribute it does not evaluate as the ONNX documentation says, so the caller can fall back to
onnxruntime.

    model = TorchOnnxModel("det_10g.onnx", device="cuda")
    scores, *rest = model.run({model.input_names[0]: blob})  # like session.run(None, feeds)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from . import onnx_torch_nn, onnx_torch_shape  # noqa: F401  (they register their ops)
from .onnx_torch_ops import DTYPES, OPS, Kernel, Node, UnsupportedOnnxGraph, tensor_from_proto

__all__ = ["TorchOnnxModel", "UnsupportedOnnxGraph"]

_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class _Step:
    kernel: Kernel
    inputs: tuple[str, ...]  # "" for an omitted optional input
    outputs: tuple[str, ...]
    release: tuple[str, ...]  # values that no later step reads: freed as soon as this one ends


class TorchOnnxModel:
    """An ONNX model loaded for evaluation with torch on `device` (float32, inference only)."""

    def __init__(
        self, model: str | os.PathLike[str] | bytes | onnx.ModelProto, device: torch.device | str = "cpu"
    ) -> None:
        proto = _load(model)
        self.device = torch.device(device)
        opset = next((o.version for o in proto.opset_import if o.domain in _STANDARD_DOMAINS), None)
        if opset is None:
            raise UnsupportedOnnxGraph("the model imports no standard ONNX opset")
        graph = proto.graph
        if graph.sparse_initializer:
            raise UnsupportedOnnxGraph("sparse initializers")
        self._constants = {t.name: tensor_from_proto(t, self.device) for t in graph.initializer}
        self._inputs = {
            vi.name: DTYPES.get(vi.type.tensor_type.elem_type)
            for vi in graph.input
            if vi.name not in self._constants
        }
        self._outputs = [vi.name for vi in graph.output]
        self._steps = self._plan(graph, opset)

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def _plan(self, graph: onnx.GraphProto, opset: int) -> list[_Step]:
        known = set(self._constants) | set(self._inputs)
        static = dict(self._constants)  # values known at load time: initializers, Constant outputs
        nodes: list[tuple[Kernel, tuple[str, ...], tuple[str, ...]]] = []
        for proto in graph.node:
            label = f"{proto.op_type} (node {proto.name!r})"
            if proto.domain not in _STANDARD_DOMAINS:
                raise UnsupportedOnnxGraph(f"{label}: operator domain {proto.domain!r}")
            builder = OPS.get(proto.op_type)
            if builder is None:
                raise UnsupportedOnnxGraph(f"{label}: op {proto.op_type} is not supported")
            node = Node(
                proto, opset, self.device, [static.get(name) if name else None for name in proto.input]
            )
            kernel = builder(node)
            node.check_all_read()
            if proto.op_type == "Constant":
                static[proto.output[0]] = kernel()
            inputs = list(proto.input)
            while inputs and not inputs[-1]:  # trailing omitted inputs take the kernel's defaults
                inputs.pop()
            unknown = [name for name in inputs if name and name not in known]
            if unknown:
                raise ValueError(f"{label} reads {unknown[0]!r} before any node writes it")
            known.update(proto.output)
            nodes.append((kernel, tuple(inputs), tuple(proto.output)))
        missing = [name for name in self._outputs if name not in known]
        if missing:
            raise ValueError(f"no node writes the graph output {missing[0]!r}")

        keep = set(self._constants) | set(self._outputs)
        last_use: dict[str, int] = {}
        for i, (_, inputs, outputs) in enumerate(nodes):
            for name in (*inputs, *outputs):
                last_use[name] = i
        return [
            _Step(
                kernel,
                inputs,
                outputs,
                tuple({n for n in (*inputs, *outputs) if n and last_use[n] == i} - keep),
            )
            for i, (kernel, inputs, outputs) in enumerate(nodes)
        ]

    def run(self, feeds: Mapping[str, np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        """The graph's outputs, in its output order, as tensors on the model's device."""
        if set(feeds) != set(self._inputs):
            raise ValueError(f"the model takes the inputs {self.input_names}, not {sorted(feeds)}")
        values: dict[str, torch.Tensor] = dict(self._constants)
        for name, dtype in self._inputs.items():
            values[name] = _as_tensor(feeds[name], dtype, self.device)
        with torch.inference_mode(), _ieee_float32(self.device):
            for step in self._steps:
                result = step.kernel(*(values[name] if name else None for name in step.inputs))
                results = (result,) if isinstance(result, torch.Tensor) else result
                for name, value in zip(step.outputs, results, strict=False):
                    if name:
                        values[name] = value
                for name in step.release:
                    values.pop(name, None)
        return [values[name].to(self.device) for name in self._outputs]


def _load(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_model_from_string(model)
    return onnx.load(os.fspath(model))


def _as_tensor(
    value: np.ndarray | torch.Tensor, dtype: torch.dtype | None, device: torch.device
) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        array = np.ascontiguousarray(value)
        value = torch.from_numpy(array if array.flags.writeable else array.copy())
    return value.to(device=device, dtype=dtype)


@contextlib.contextmanager
def _ieee_float32(device: torch.device) -> Iterator[None]:
    """Full float32 convolutions and matrix products while a graph runs on CUDA.

    torch lets cuDNN convolutions use TF32 (10-bit mantissas) by default; these networks' outputs
    place the face crop, which must match onnxruntime's float32 results. The flags are global, so
    another thread's CUDA work during a run also gets full float32: slower, never wrong. (The
    older flags, not torch 2.9's fp32_precision: setting only the conv one of those makes reading
    `cudnn.allow_tf32` raise.)"""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
