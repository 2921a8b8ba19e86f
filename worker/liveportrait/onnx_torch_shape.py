"""The ONNX operators for constants, types and shapes in `onnx_torch` (see `onnx_torch_ops` for
how builders and kernels work, and why integer tensors stay on the CPU)."""

from __future__ import annotations

import math

import torch

from .onnx_torch_ops import DTYPES, Kernel, Node, Tensor, align, axes_of, home, ints, op, tensor_from_proto

# ---------------------------------------------------------------------------- constants and types


@op("Cast")
def _cast(node: Node) -> Kernel:
    to = node.int("to", 0)
    node.ignore("saturate")  # float8 targets only, which are refused below
    node.require(to in DTYPES, f"cast to element type {to}")
    dtype = DTYPES[to]
    return lambda x: x.to(dtype)


@op("Constant")
def _constant(node: Node) -> Kernel:
    if node.has("value"):
        value = tensor_from_proto(node.get("value"), node.device)
    elif node.has("value_float") or node.has("value_floats"):
        floats = node.floats("value_floats")
        value = torch.tensor(floats if floats is not None else node.float("value_float", 0.0))
        value = value.to(node.device)
    elif node.has("value_int") or node.has("value_ints"):
        listed = node.ints("value_ints")
        value = torch.tensor(listed if listed is not None else node.int("value_int", 0), dtype=torch.int64)
    else:
        node.refuse("only tensor, float and int values are supported")
    return lambda: value


@op("ConstantOfShape")
def _constant_of_shape(node: Node) -> Kernel:
    proto = node.get("value")
    fill = torch.zeros(1) if proto is None else tensor_from_proto(proto, torch.device("cpu"))
    value, dtype = fill.reshape(-1)[0].item(), fill.dtype
    device = home(dtype, node.device)
    return lambda shape: torch.full(ints(shape), value, dtype=dtype, device=device)


@op("Range")
def _range(node: Node) -> Kernel:
    def kernel(start: Tensor, limit: Tensor, delta: Tensor) -> Tensor:
        return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)

    return kernel


@op("Dropout")
def _dropout(node: Node) -> Kernel:
    node.ignore("seed", "ratio", "is_test")  # inference: the identity
    if node.n_outputs == 1:
        return lambda x, *rest: x
    return lambda x, *rest: (x, torch.ones_like(x, dtype=torch.bool))


# ---------------------------------------------------------------------------- shapes


@op("Shape")
def _shape(node: Node) -> Kernel:
    start, end = node.int("start", 0), node.get("end")
    return lambda x: torch.tensor(list(x.shape)[start:end], dtype=torch.int64)


@op("Reshape")
def _reshape(node: Node) -> Kernel:
    allow_zero = node.int("allowzero", 0)

    def kernel(x: Tensor, shape_t: Tensor) -> Tensor:
        shape = ints(shape_t)
        if not allow_zero:  # 0 copies the input's size on that axis
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)

    return kernel


@op("Flatten")
def _flatten(node: Node) -> Kernel:
    axis = node.int("axis", 1)

    def kernel(x: Tensor) -> Tensor:
        a = axis + x.dim() if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))

    return kernel


@op("Squeeze")
def _squeeze(node: Node) -> Kernel:
    attr = node.ints("axes")

    def kernel(x: Tensor, given: Tensor | None = None) -> Tensor:
        axes = axes_of(attr, given)
        return x.squeeze() if axes is None else x.squeeze(tuple(a % x.dim() for a in axes))

    return kernel


@op("Unsqueeze")
def _unsqueeze(node: Node) -> Kernel:
    attr = node.ints("axes")

    def kernel(x: Tensor, given: Tensor | None = None) -> Tensor:
        axes = axes_of(attr, given) or []
        rank = x.dim() + len(axes)
        for a in sorted(a % rank for a in axes):
            x = x.unsqueeze(a)
        return x

    return kernel


@op("Transpose")
def _transpose(node: Node) -> Kernel:
    perm = node.ints("perm")
    return lambda x: x.permute(perm or list(reversed(range(x.dim()))))


@op("Concat")
def _concat(node: Node) -> Kernel:
    axis = node.int("axis", 0)
    return lambda *xs: torch.cat(align(*xs), dim=axis)


@op("Split")
def _split(node: Node) -> Kernel:
    axis, attr_split, n_out = node.int("axis", 0), node.ints("split"), node.n_outputs
    node.ignore("num_outputs")  # opset 18: equals the number of outputs

    def kernel(x: Tensor, given: Tensor | None = None) -> tuple[Tensor, ...]:
        sizes = attr_split if attr_split is not None else None if given is None else ints(given)
        if sizes is None:  # equal parts, the last one smaller when they do not divide evenly
            n = x.shape[axis]
            chunk = -(-n // n_out)
            sizes = [chunk] * (n_out - 1) + [n - chunk * (n_out - 1)]
        return tuple(torch.split(x, sizes, dim=axis))

    return kernel


@op("Slice")
def _slice(node: Node) -> Kernel:
    attr_starts, attr_ends, attr_axes = (
        node.ints("starts"),
        node.ints("ends"),
        node.ints("axes"),
    )  # opset < 10

    def kernel(
        x: Tensor,
        starts_t: Tensor | None = None,
        ends_t: Tensor | None = None,
        axes_t: Tensor | None = None,
        steps_t: Tensor | None = None,
    ) -> Tensor:
        starts = attr_starts if starts_t is None else ints(starts_t)
        ends = attr_ends if ends_t is None else ints(ends_t)
        assert starts is not None and ends is not None
        axes = attr_axes if axes_t is None else ints(axes_t)
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps_t is None else ints(steps_t)
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            ax = axis % x.dim()
            n = x.shape[ax]
            start, end = start + n if start < 0 else start, end + n if end < 0 else end
            if step > 0:
                cut = slice(min(max(start, 0), n), min(max(end, 0), n), step)
                x = x[(slice(None),) * ax + (cut,)]
            else:
                # torch slices take no negative step; ONNX clamps a backward slice to [-1, n-1]
                start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
                x = x.index_select(ax, torch.arange(start, end, step, device=x.device))
        return x

    return kernel


@op("Gather")
def _gather(node: Node) -> Kernel:
    axis = node.int("axis", 0)

    def kernel(x: Tensor, index: Tensor) -> Tensor:
        ax = axis % x.dim()
        index = index.to(x.device)
        index = torch.where(index < 0, index + x.shape[ax], index)
        out = x.index_select(ax, index.reshape(-1))
        return out.reshape(x.shape[:ax] + index.shape + x.shape[ax + 1 :])

    return kernel


@op("Size")
def _size(node: Node) -> Kernel:
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64)


@op("Tile")
def _tile(node: Node) -> Kernel:
    return lambda x, repeats: x.repeat(ints(repeats))


@op("Expand")
def _expand(node: Node) -> Kernel:
    return lambda x, shape: x.expand(torch.broadcast_shapes(x.shape, tuple(ints(shape))))


@op("ArgMax", "ArgMin")
def _arg_extreme(node: Node) -> Kernel:
    axis, keep = node.int("axis", 0), bool(node.int("keepdims", 1))
    node.require(node.int("select_last_index", 0) == 0, "select_last_index=1")
    fn = torch.argmax if node.op == "ArgMax" else torch.argmin
    return lambda x: fn(x, dim=axis, keepdim=keep)
