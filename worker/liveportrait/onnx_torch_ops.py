"""The ONNX operators that `onnx_torch` evaluates, written as torch code: the node wrapper, the op
table, and the element-wise, linear-algebra and reduction operators (constants, types and shapes
are in `onnx_torch_shape`; convolution, pooling, normalisation, padding and resizing in
`onnx_torch_nn`).

Each op is a builder: it reads the node's attributes once, when the model is loaded, and returns
a kernel called with the node's input tensors in order (None for an omitted optional input in
the middle; omitted trailing inputs are not passed, so they take the kernel's defaults). It
returns one tensor or a tuple of them. Semantics follow the ONNX operator documentation for
opsets 9 to 18.

Integer tensors in these graphs are shapes, axes, pads and indices: they live on the CPU, so
reading them as Python numbers costs no device synchronisation. Ops that combine a CPU tensor
with a device tensor move it to the device first (`align`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

Tensor = torch.Tensor
Kernel = Callable[..., Tensor | tuple[Tensor, ...]]
Builder = Callable[["Node"], Kernel]

OPS: dict[str, Builder] = {}

# The ONNX element types that these graphs use.
DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


class UnsupportedOnnxGraph(ValueError):
    """The graph holds an op or attribute that the torch runner does not evaluate as ONNX says;
    the caller runs the file with onnxruntime instead."""


class Node:
    """One node's attributes as Python values. A builder reads every attribute it implements (or
    names it as irrelevant with `ignore`), and `check_all_read` refuses the rest, so an attribute
    we do not implement can never be dropped silently."""

    def __init__(
        self,
        proto: onnx.NodeProto,
        opset: int,
        device: torch.device,
        constants: Sequence[Tensor | None] = (),
    ) -> None:
        self.op = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else "")
        self.opset = opset
        self.device = device
        self.n_outputs = len(proto.output)
        self._attrs: dict[str, Any] = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self._read: set[str] = set()
        self._constants = list(constants)

    def constant(self, index: int) -> Tensor | None:
        """Input `index` when it is an initializer or a Constant node's output: a builder can read
        it once at load time instead of on every run (a device synchronisation on CUDA)."""
        return self._constants[index] if index < len(self._constants) else None

    def refuse(self, reason: str) -> NoReturn:
        raise UnsupportedOnnxGraph(f"{self.op} (node {self.name!r}): {reason}")

    def require(self, condition: bool, reason: str) -> None:
        if not condition:
            self.refuse(reason)

    def has(self, name: str) -> bool:
        return name in self._attrs

    def get(self, name: str) -> Any:
        self._read.add(name)
        return self._attrs.get(name)

    def int(self, name: str, default: int) -> int:
        value = self.get(name)
        return default if value is None else int(value)

    def float(self, name: str, default: float) -> float:
        value = self.get(name)
        return default if value is None else float(value)

    def str(self, name: str, default: str) -> str:
        value = self.get(name)
        return default if value is None else bytes(value).decode()

    def ints(self, name: str) -> list[int] | None:
        value = self.get(name)
        return None if value is None else [int(v) for v in value]

    def floats(self, name: str) -> list[float] | None:
        value = self.get(name)
        return None if value is None else [float(v) for v in value]

    def ignore(self, *names: str) -> None:
        self._read.update(names)

    def check_all_read(self) -> None:
        unknown = sorted(set(self._attrs) - self._read)
        if unknown:
            self.refuse(f"unsupported attribute(s) {', '.join(unknown)}")


def op(*names: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        for name in names:
            OPS[name] = builder
        return builder

    return register


def ints(t: Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def home(dtype: torch.dtype, device: torch.device) -> torch.device:
    """Where a constant of this type lives: float data on the model's device, integer and bool
    metadata on the CPU (see the module docstring)."""
    return device if dtype.is_floating_point else torch.device("cpu")


def align(*ts: Tensor) -> list[Tensor]:
    device = next((t.device for t in ts if t.device.type != "cpu"), None)
    return list(ts) if device is None else [t.to(device) for t in ts]


def torch_pads(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX lists pads as (all begins, all ends) from the first axis; F.pad wants (begin, end)
    pairs from the last axis."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        out += [b, e]
    return out


def tensor_from_proto(proto: onnx.TensorProto, device: torch.device) -> Tensor:
    array = numpy_helper.to_array(proto).copy()  # writable: torch refuses read-only buffers
    t = torch.from_numpy(array)
    return t.to(home(t.dtype, device))


def axes_of(attr: list[int] | None, given: Tensor | None) -> list[int] | None:
    """Axes as an attribute (older opsets) or as an optional input (newer)."""
    return attr if attr is not None else None if given is None else ints(given)


def _fixed(fn: Kernel) -> Builder:
    return lambda node: fn


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Builder:
    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return fn(*align(a, b))

    return lambda node: kernel


def _variadic(fn: Callable[[Tensor, Tensor], Tensor], mean: bool = False) -> Builder:
    def kernel(*xs: Tensor) -> Tensor:
        ts = align(*xs)
        out = ts[0]
        for t in ts[1:]:
            out = fn(out, t)
        return out / len(ts) if mean else out

    return lambda node: kernel


def _div(a: Tensor, b: Tensor) -> Tensor:
    # Integer division truncates toward zero in onnxruntime (C semantics).
    return a / b if a.dtype.is_floating_point else torch.div(a, b, rounding_mode="trunc")


def _reduce(fn: Callable[[Tensor, list[int], bool], Tensor]) -> Builder:
    def build(node: Node) -> Kernel:
        keep, noop_empty = bool(node.int("keepdims", 1)), node.int("noop_with_empty_axes", 0)
        attr = node.ints("axes")

        def kernel(x: Tensor, given: Tensor | None = None) -> Tensor:
            axes = axes_of(attr, given)
            if not axes:
                if noop_empty:
                    return x
                axes = list(range(x.dim()))
            return fn(x, [a % x.dim() for a in axes], keep) if axes else x

        return kernel

    return build


def _prod(x: Tensor, dims: list[int], keep: bool) -> Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, d, keepdim=keep)
    return x


OPS.update(
    {
        "Relu": _fixed(torch.relu),
        "Sigmoid": _fixed(torch.sigmoid),
        "Tanh": _fixed(torch.tanh),
        "Erf": _fixed(torch.erf),
        "Exp": _fixed(torch.exp),
        "Log": _fixed(torch.log),
        "Sqrt": _fixed(torch.sqrt),
        "Abs": _fixed(torch.abs),
        "Neg": _fixed(torch.neg),
        "Floor": _fixed(torch.floor),
        "Ceil": _fixed(torch.ceil),
        "Round": _fixed(torch.round),  # half to even, as ONNX's Round
        "Reciprocal": _fixed(torch.reciprocal),
        "Sign": _fixed(torch.sign),
        "Sin": _fixed(torch.sin),
        "Cos": _fixed(torch.cos),
        "Softplus": _fixed(F.softplus),
        "Not": _fixed(torch.logical_not),
        "Identity": _fixed(lambda x: x),
        "MatMul": _fixed(torch.matmul),
        "Add": _binary(torch.add),
        "Sub": _binary(torch.sub),
        "Mul": _binary(torch.mul),
        "Div": _binary(_div),
        "Pow": _binary(lambda a, b: torch.pow(a, b).to(a.dtype)),  # ONNX: the base's type
        "Equal": _binary(torch.eq),
        "Greater": _binary(torch.gt),
        "Less": _binary(torch.lt),
        "GreaterOrEqual": _binary(torch.ge),
        "LessOrEqual": _binary(torch.le),
        "And": _binary(torch.logical_and),
        "Or": _binary(torch.logical_or),
        "Xor": _binary(torch.logical_xor),
        "Sum": _variadic(torch.add),
        "Mean": _variadic(torch.add, mean=True),
        "Max": _variadic(torch.maximum),
        "Min": _variadic(torch.minimum),
        "Where": _fixed(lambda c, x, y: torch.where(*align(c.bool(), x, y))),
        "ReduceMean": _reduce(lambda x, d, k: torch.mean(x, d, keepdim=k)),
        "ReduceSum": _reduce(lambda x, d, k: torch.sum(x, d, keepdim=k)),
        "ReduceMax": _reduce(lambda x, d, k: torch.amax(x, d, keepdim=k)),
        "ReduceMin": _reduce(lambda x, d, k: torch.amin(x, d, keepdim=k)),
        "ReduceProd": _reduce(_prod),
    }
)


# ---------------------------------------------------------------------------- activations


@op("LeakyRelu", "Elu")
def _leaky_relu(node: Node) -> Kernel:
    alpha = node.float("alpha", 0.01 if node.op == "LeakyRelu" else 1.0)
    fn = F.leaky_relu if node.op == "LeakyRelu" else F.elu
    return lambda x: fn(x, alpha)


@op("PRelu")
def _prelu(node: Node) -> Kernel:
    def kernel(x: Tensor, slope: Tensor) -> Tensor:
        x, slope = align(x, slope)
        if slope.dim() == 1 and x.dim() > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
            # A per-channel [C] slope that numpy broadcasting cannot place (it would pair it with
            # the last axis): the pre-opset-7 meaning, and torch's, is the channel axis.
            slope = slope.reshape([-1] + [1] * (x.dim() - 2))
        return torch.where(x < 0, x * slope, x)

    return kernel


@op("HardSigmoid", "HardSwish")
def _hard_sigmoid(node: Node) -> Kernel:
    # ONNX defines HardSwish as x * HardSigmoid(x) with alpha 1/6, beta 1/2 (torch's
    # relu6(x + 3) / 6 rounds differently).
    swish = node.op == "HardSwish"
    alpha = 1.0 / 6.0 if swish else node.float("alpha", 0.2)
    beta = 0.5 if swish else node.float("beta", 0.5)

    def kernel(x: Tensor) -> Tensor:
        gate = torch.clamp(x * alpha + beta, 0.0, 1.0)
        return x * gate if swish else gate

    return kernel


@op("Clip")
def _clip(node: Node) -> Kernel:
    if node.has("min") or node.has("max"):  # opset < 11: bounds are attributes
        lo, hi = node.float("min", -math.inf), node.float("max", math.inf)
        return lambda x: torch.clamp(x, lo, hi)

    def kernel(x: Tensor, lo: Tensor | None = None, hi: Tensor | None = None) -> Tensor:
        if lo is None and hi is None:
            return x
        return torch.clamp(x, *(None if t is None else t.to(x.device, x.dtype) for t in (lo, hi)))

    return kernel


@op("Softmax", "LogSoftmax")
def _softmax(node: Node) -> Kernel:
    fn = torch.softmax if node.op == "Softmax" else torch.log_softmax
    # Before opset 13 the input is flattened to 2-D at `axis` (default 1) and normalised over
    # everything from `axis` on; from 13 on it is one axis (default -1).
    legacy = node.opset < 13
    axis = node.int("axis", 1 if legacy else -1)

    def kernel(x: Tensor) -> Tensor:
        if not legacy:
            return fn(x, axis)
        a = axis % x.dim()
        return fn(x.reshape(math.prod(x.shape[:a]), -1), 1).reshape(x.shape)

    return kernel


# ---------------------------------------------------------------------------- linear algebra


@op("Gemm")
def _gemm(node: Node) -> Kernel:
    alpha, beta = node.float("alpha", 1.0), node.float("beta", 1.0)
    trans_a, trans_b = node.int("transA", 0), node.int("transB", 0)

    def kernel(a: Tensor, b: Tensor, c: Tensor | None = None) -> Tensor:
        a, b = (a.t() if trans_a else a), (b.t() if trans_b else b)
        if c is None:
            return a @ b if alpha == 1.0 else (a @ b) * alpha
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)

    return kernel
