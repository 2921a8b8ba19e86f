"""The ONNX convolution, pooling, normalisation, padding and resizing operators for `onnx_torch`
(see `onnx_torch_ops` for how builders and kernels work).

torch's own padding arguments are symmetric and its pooling windows count differently from ONNX
at the borders, so asymmetric pads are applied with F.pad first and average pooling divides by a
per-window count computed here, as ONNX defines it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .onnx_torch_ops import Kernel, Node, Tensor, ints, op, torch_pads

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def _spatial_pads(
    auto_pad: str, pads: list[int] | None, size: Sequence[int], span: Sequence[int], strides: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial axis; `span` is the dilated kernel size."""
    nd = len(span)
    if auto_pad.startswith("SAME"):
        total = [max(0, (-(-n // s) - 1) * s + k - n) for n, k, s in zip(size, span, strides, strict=True)]
        small, big = [t // 2 for t in total], [t - t // 2 for t in total]
        return (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    if auto_pad == "VALID" or pads is None:
        return [0] * nd, [0] * nd
    return pads[:nd], pads[nd:]


def _window_params(
    node: Node, dilated: bool
) -> tuple[str, list[int] | None, list[int] | None, list[int] | None]:
    auto_pad = node.str("auto_pad", "NOTSET")
    node.require(auto_pad in _AUTO_PADS, f"auto_pad={auto_pad}")
    dilations = node.ints("dilations")
    if not dilated:
        node.require(dilations is None or set(dilations) == {1}, "dilations other than 1")
    return auto_pad, node.ints("pads"), node.ints("strides"), dilations


@op("Conv")
def _conv(node: Node) -> Kernel:
    auto_pad, pads, strides, dilations = _window_params(node, dilated=True)
    group = node.int("group", 1)
    node.ignore("kernel_shape")  # the weight's own shape

    def kernel(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        k = w.shape[2:]
        s, d = strides or [1] * len(k), dilations or [1] * len(k)
        span = [(kk - 1) * dd + 1 for kk, dd in zip(k, d, strict=True)]
        begin, end = _spatial_pads(auto_pad, pads, x.shape[2:], span, s)
        if begin != end:
            x, begin = F.pad(x, torch_pads(begin, end)), [0] * len(k)
        return _CONV[len(k)](x, w, b, s, begin, d, group)

    return kernel


@op("ConvTranspose")
def _conv_transpose(node: Node) -> Kernel:
    node.require(node.str("auto_pad", "NOTSET") == "NOTSET", "auto_pad")
    node.require(not node.has("output_shape"), "output_shape")
    pads, strides, dilations = node.ints("pads"), node.ints("strides"), node.ints("dilations")
    group, output_padding = node.int("group", 1), node.ints("output_padding")
    node.ignore("kernel_shape")

    def kernel(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        nd = w.dim() - 2
        s, d = strides or [1] * nd, dilations or [1] * nd
        begin, end = (pads[:nd], pads[nd:]) if pads else ([0] * nd, [0] * nd)
        fn, extra = _CONV_T[nd], output_padding or [0] * nd
        if begin == end:
            return fn(x, w, b, s, begin, extra, group, d)
        # Unequal pads: transpose without them, then crop each side by its own pad.
        y = fn(x, w, b, s, 0, extra, group, d)
        crop = [slice(p, y.shape[2 + i] - q) for i, (p, q) in enumerate(zip(begin, end, strict=True))]
        return y[(slice(None), slice(None), *crop)]

    return kernel


def _pool_geometry(
    size: Sequence[int], k: list[int], s: list[int], auto_pad: str, pads: list[int] | None, ceil_mode: bool
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Begin pads, declared end pads, end pads with the room that ceil_mode's last window needs,
    and the output sizes."""
    begin, end = _spatial_pads(auto_pad, pads, size, k, s)
    outs, room = [], []
    for n, kk, st, b, e in zip(size, k, s, begin, end, strict=True):
        span = n + b + e - kk
        out = (-(-span // st) if ceil_mode else span // st) + 1
        if ceil_mode and (out - 1) * st >= n + b:  # a window may not start in the end padding
            out -= 1
        outs.append(out)
        room.append(max(e, (out - 1) * st + kk - n - b))
    return begin, end, room, outs


@op("AveragePool", "MaxPool")
def _pool(node: Node) -> Kernel:
    average = node.op == "AveragePool"
    auto_pad, pads, strides, dilations = _window_params(node, dilated=not average)
    k = node.ints("kernel_shape")
    node.require(k is not None, "kernel_shape missing")
    assert k is not None
    ceil_mode = bool(node.int("ceil_mode", 0))
    include_pad = bool(node.int("count_include_pad", 0)) if average else False
    node.require(node.n_outputs == 1, "the Indices output")
    node.ignore("storage_order")  # only the Indices output's layout
    nd = len(k)
    counts: dict[tuple[int, ...], Tensor] = {}  # per input size
    s, d = strides or [1] * len(k), dilations or [1] * len(k)
    span = [(kk - 1) * dd + 1 for kk, dd in zip(k, d, strict=True)]

    def kernel(x: Tensor) -> Tensor:
        size = tuple(x.shape[2:])
        begin, declared_end, end, outs = _pool_geometry(size, span, s, auto_pad, pads, ceil_mode)
        if not average:
            if any(begin) or any(end):
                x = F.pad(x, torch_pads(begin, end), value=-math.inf)
            return _MAX_POOL[nd](x, k, s, 0, d)
        if not any(begin) and not any(end):  # every window is whole: torch's mean is ONNX's
            return F.avg_pool2d(x, k, s) if nd == 2 else _sum_pool(x, k, s) / math.prod(k)
        count = counts.get(size)
        if count is None:
            count = counts[size] = _counts(size, k, s, begin, declared_end, outs, include_pad).to(x.device)
        return _sum_pool(F.pad(x, torch_pads(begin, end)), k, s) / count

    return kernel


def _counts(
    size: Sequence[int],
    k: list[int],
    s: list[int],
    begin: list[int],
    end: list[int],
    outs: list[int],
    pad: bool,
) -> Tensor:
    """Per output window, the number of elements AveragePool divides by: the input's, and with
    count_include_pad the declared pads' too, never the room added for ceil_mode's last window."""
    counts = torch.ones((), dtype=torch.float32)
    for n, kk, st, b, e, o in zip(size, k, s, begin, end, outs, strict=True):
        lo, hi = (0, n + b + e) if pad else (b, b + n)
        starts = torch.arange(o) * st
        axis = (torch.clamp(starts + kk, max=hi) - torch.clamp(starts, min=lo)).clamp(min=0)
        counts = counts[..., None] * axis.to(torch.float32)
    return counts


def _sum_pool(x: Tensor, k: list[int], s: list[int]) -> Tensor:
    if len(k) == 1:  # avg_pool1d takes no divisor_override: pool a 1-row image
        return F.avg_pool2d(x[..., None, :], [1, k[0]], [1, s[0]], divisor_override=1)[..., 0, :]
    pool = F.avg_pool2d if len(k) == 2 else F.avg_pool3d
    return pool(x, k, s, divisor_override=1)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node: Node) -> Kernel:
    if node.op == "GlobalAveragePool":
        return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
    return lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@op("BatchNormalization")
def _batch_norm(node: Node) -> Kernel:
    eps = node.float("epsilon", 1e-5)
    node.ignore("momentum")  # updates running statistics in training only
    node.require(node.int("training_mode", 0) == 0 and node.n_outputs == 1, "training mode")
    node.require(node.int("spatial", 1) == 1, "spatial=0")
    return lambda x, scale, b, mean, var: F.batch_norm(x, mean, var, scale, b, False, 0.0, eps)


@op("InstanceNormalization")
def _instance_norm(node: Node) -> Kernel:
    eps = node.float("epsilon", 1e-5)
    return lambda x, scale, b: F.instance_norm(x, weight=scale, bias=b, eps=eps)


@op("LayerNormalization")
def _layer_norm(node: Node) -> Kernel:
    axis, eps = node.int("axis", -1), node.float("epsilon", 1e-5)
    node.require(node.int("stash_type", 1) == 1, "stash_type other than float32")
    n_out = node.n_outputs

    def kernel(x: Tensor, scale: Tensor, b: Tensor | None = None) -> Tensor | tuple[Tensor, ...]:
        dims = tuple(range(axis % x.dim(), x.dim()))
        mean = x.mean(dims, keepdim=True)
        centred = x - mean
        inv_std = torch.rsqrt((centred * centred).mean(dims, keepdim=True) + eps)
        y = centred * inv_std * scale
        y = y if b is None else y + b
        return y if n_out == 1 else (y, mean, inv_std)[:n_out]

    return kernel


def _edge_index(mode: str, n: int, begin: int, end: int) -> Tensor:
    """For edge, reflect and wrap padding: the source position of every output position."""
    i = torch.arange(-begin, n + end)
    if mode == "edge":
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i % n
    if n == 1:
        return torch.zeros_like(i)
    i = i % (2 * n - 2)  # reflect: the sequence mirrored about its ends repeats every 2n - 2
    return torch.where(i >= n, 2 * n - 2 - i, i)


_TORCH_PAD_MODES = {"edge": "replicate", "reflect": "reflect", "wrap": "circular"}


@op("Pad")
def _pad(node: Node) -> Kernel:
    mode = node.str("mode", "constant")
    node.require(mode in ("constant", "edge", "reflect", "wrap"), f"mode={mode}")
    attr_pads, attr_value = node.ints("pads"), node.float("value", 0.0)  # opset < 11
    known_value = node.constant(2)
    fixed_value = None if known_value is None else known_value.item()

    def kernel(
        x: Tensor, pads_t: Tensor | None = None, value_t: Tensor | None = None, axes_t: Tensor | None = None
    ) -> Tensor:
        pads = attr_pads if pads_t is None else ints(pads_t)
        assert pads is not None
        value = attr_value if value_t is None else fixed_value if fixed_value is not None else value_t.item()
        axes = range(x.dim()) if axes_t is None else [a % x.dim() for a in ints(axes_t)]
        begin, end = [0] * x.dim(), [0] * x.dim()
        for i, a in enumerate(axes):
            begin[a], end[a] = pads[i], pads[i + len(axes)]
        if mode == "constant":
            return F.pad(x, torch_pads(begin, end), value=value) if any(begin) or any(end) else x
        padded = [a for a in range(x.dim()) if begin[a] or end[a]]
        if not padded:
            return x
        # F.pad's own edge modes are much faster than gathering, where torch takes them: the last
        # one to three axes of a tensor with one or two more, pads >= 0 and (reflect, wrap) < size.
        trailing = x.dim() - padded[0]
        limit = min(x.shape[padded[0] :]) - (mode == "reflect")
        if (
            trailing <= 3
            and x.dim() - trailing in (1, 2)
            and min(begin + end) >= 0
            and max(begin + end) <= limit
        ):
            return F.pad(x, torch_pads(begin[padded[0] :], end[padded[0] :]), mode=_TORCH_PAD_MODES[mode])
        for a, (b, e) in enumerate(zip(begin, end, strict=True)):
            if b or e:
                x = x.index_select(a, _edge_index(mode, x.shape[a], b, e).to(x.device))
        return x

    return kernel


_COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _source_positions(coord: str, n: int, o: int, scale: np.float32) -> Tensor:
    """Each output position's coordinate in the input, in float32 as onnxruntime computes it."""
    x, s = torch.arange(o, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)
    if coord == "asymmetric":
        return x / s
    if coord == "tf_half_pixel_for_nn":
        return (x + 0.5) / s
    if coord == "align_corners":
        return x * (n - 1) / (o - 1) if o > 1 else torch.zeros(o)
    if coord == "pytorch_half_pixel" and o == 1:
        return torch.zeros(o)
    return (x + 0.5) / s - 0.5


def _nearest_index(rounding: str, c: Tensor, n: int, scale: np.float32) -> Tensor:
    if rounding == "legacy":  # Upsample and Resize-10: down when enlarging, up when shrinking
        rounding = "floor" if scale >= 1 else "ceil"
    if rounding == "round_prefer_floor":
        c = torch.ceil(c - 0.5)
    elif rounding == "round_prefer_ceil":
        c = torch.floor(c + 0.5)
    else:
        c = torch.floor(c) if rounding == "floor" else torch.ceil(c)
    return c.clamp(0, n - 1).to(torch.int64)


@op("Resize", "Upsample")
def _resize(node: Node) -> Kernel:
    mode = node.str("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    node.require(mode in ("nearest", "linear"), f"mode={mode}")
    attr_scales = node.floats("scales")  # Upsample-7
    legacy = node.op == "Upsample" or node.opset < 11
    coord, rounding = "asymmetric", "legacy"
    if not legacy:
        coord = node.str("coordinate_transformation_mode", "half_pixel")
        rounding = node.str("nearest_mode", "round_prefer_floor")
        node.require(coord in _COORDINATES, f"coordinate_transformation_mode={coord}")
        node.require(rounding in _NEAREST, f"nearest_mode={rounding}")
        node.require(node.int("antialias", 0) == 0, "antialias=1")
        node.require(node.ints("axes") is None, "axes")
        node.require(node.str("keep_aspect_ratio_policy", "stretch") == "stretch", "keep_aspect_ratio_policy")
        node.ignore("cubic_coeff_a", "exclude_outside", "extrapolation_value")  # cubic, tf_crop_and_resize
    known = node.constant(1 if legacy else 2)
    if attr_scales is None and known is not None and known.numel():
        attr_scales = known.tolist()
    plans: dict[tuple[object, ...], tuple[Tensor, ...]] = {}

    def plan(n: int, o: int, scale: np.float32, device: torch.device) -> tuple[Tensor, ...]:
        key = (n, o, float(scale), device)
        if key not in plans:
            c = _source_positions(coord, n, o, scale)
            if mode == "nearest":
                plans[key] = (_nearest_index(rounding, c, n, scale).to(device),)
            else:  # linear: positions outside the input take its edge values
                c = c.clamp(0, n - 1)
                low = torch.floor(c)
                w = (c - low).to(device)
                i0 = low.to(torch.int64)
                plans[key] = (i0.to(device), (i0 + 1).clamp(max=n - 1).to(device), 1 - w, w)
        return plans[key]

    def kernel(x: Tensor, *rest: Tensor | None) -> Tensor:
        scales_t = rest[0] if legacy and rest else rest[1] if len(rest) > 1 else None
        sizes_t = rest[2] if not legacy and len(rest) > 2 else None
        if sizes_t is not None and sizes_t.numel():
            sizes = ints(sizes_t)
            scales = [np.float32(o) / np.float32(n) for o, n in zip(sizes, x.shape, strict=True)]
        else:
            if attr_scales is not None:
                given = attr_scales
            else:
                assert scales_t is not None, "Resize needs scales or sizes"
                given = scales_t.tolist()
            scales = [np.float32(v) for v in given]
            sizes = [int(sc * np.float32(n)) for sc, n in zip(scales, x.shape, strict=True)]
        for ax, (n, o, sc) in enumerate(zip(x.shape, sizes, scales, strict=True)):
            if o == n and sc == 1:
                continue
            p = plan(n, o, sc, x.device)
            if mode == "nearest":
                x = x.index_select(ax, p[0])
            else:
                shape = [1] * x.dim()
                shape[ax] = o
                x = x.index_select(ax, p[0]) * p[2].view(shape) + x.index_select(ax, p[1]) * p[3].view(shape)
        return x

    return kernel
