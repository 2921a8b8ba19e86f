"""The torch ONNX runner's convolution, pooling, normalisation, padding and resizing ops against
onnxruntime, one node at a time, with the attributes whose ONNX meaning differs from torch's
defaults: asymmetric and automatic pads, grouped convolutions, ceil_mode and count_include_pad,
pad modes and the ONNX pads order, Resize's coordinate and rounding modes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.worker.liveportrait.onnx_graphs import assert_matches_onnxruntime, case, f32, i64, model, randn

X = randn(2, 4, 9, 11)
W = randn(6, 4, 3, 3)
W_GROUPED = randn(8, 2, 3, 3)  # group 2: 4 input channels in two pairs, 8 outputs
B6, B8 = randn(6), randn(8)
SMALL = randn(1, 2, 4, 5)
X10 = randn(1, 3, 10, 10)  # (10 - 3) % 2 != 0: ceil_mode's last window runs past the pads
# Integer-valued and exactly pooled in float32, so sums and powers-of-two divisions are exact.
STEPS = np.arange(2 * 4 * 9 * 11, dtype=np.float32).reshape(2, 4, 9, 11) % 23


CONV = [
    case("Conv", {"x": X, "w": W, "b": B6}),
    case("Conv", {"x": X, "w": W}, pads=[1, 1, 1, 1], strides=[2, 2], tag="pads-strides-no-bias"),
    case("Conv", {"x": X, "w": W_GROUPED, "b": B8}, group=2, pads=[2, 1, 2, 1], tag="grouped-pads"),
    case("Conv", {"x": X, "w": randn(4, 1, 3, 3)}, group=4, pads=[1, 1, 1, 1], tag="depthwise"),
    case("Conv", {"x": X, "w": W, "b": B6}, pads=[0, 1, 2, 1], tag="asymmetric-pads"),
    case("Conv", {"x": X, "w": W}, dilations=[2, 1], pads=[2, 1, 2, 1], tag="dilations"),
    case("Conv", {"x": X, "w": W}, auto_pad="SAME_UPPER", strides=[2, 2], tag="same-upper"),
    case("Conv", {"x": X, "w": randn(6, 4, 2, 4)}, auto_pad="SAME_LOWER", tag="same-lower"),
    case("Conv", {"x": X, "w": W}, auto_pad="VALID", strides=[1, 3], tag="valid"),
    case("Conv", {"x": randn(2, 4, 10), "w": randn(3, 4, 3)}, pads=[1, 0], kernel_shape=[3], tag="1d"),
    case("Conv", {"x": STEPS, "w": np.ones((2, 4, 2, 2), np.float32) / 4}, exact=True, tag="exact"),
    case("ConvTranspose", {"x": SMALL, "w": randn(2, 3, 3, 3), "b": randn(3)}),
    case(
        "ConvTranspose",
        {"x": SMALL, "w": randn(2, 3, 3, 3)},
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        tag="stride2",
    ),
    case(
        "ConvTranspose",
        {"x": SMALL, "w": randn(2, 3, 4, 4)},
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        output_padding=[1, 1],
        tag="output-padding",
    ),
    case("ConvTranspose", {"x": SMALL, "w": randn(2, 2, 3, 3)}, group=2, tag="grouped"),
    case("ConvTranspose", {"x": SMALL, "w": randn(2, 3, 3, 3)}, pads=[0, 1, 1, 0], tag="asymmetric-pads"),
]

POOL = [
    case("AveragePool", {"x": STEPS}, kernel_shape=[2, 2], strides=[2, 2], exact=True, tag="k2s2"),
    case("AveragePool", {"x": X}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], tag="pads"),
    case(
        "AveragePool",
        {"x": X},
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
        tag="pads-count-pad",
    ),
    case("AveragePool", {"x": X10}, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, tag="ceil"),
    case(
        "AveragePool",
        {"x": X10},
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 0, 1, 2],
        ceil_mode=1,
        count_include_pad=1,
        tag="ceil-past-pads",
    ),
    case(
        "AveragePool",
        {"x": X},
        kernel_shape=[3, 2],
        strides=[2, 3],
        pads=[1, 0, 1, 1],
        ceil_mode=1,
        count_include_pad=1,
        tag="ceil-count-pad",
    ),
    case(
        "AveragePool", {"x": X}, kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 2], tag="asymmetric-pads"
    ),
    case(
        "AveragePool", {"x": X}, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", tag="same-upper"
    ),
    case(
        "AveragePool",
        {"x": X},
        kernel_shape=[3, 3],
        auto_pad="SAME_LOWER",
        count_include_pad=1,
        tag="same-lower",
    ),
    case("AveragePool", {"x": randn(2, 3, 10)}, kernel_shape=[4], strides=[3], pads=[1, 2], tag="1d"),
    case(
        "AveragePool", {"x": randn(1, 2, 5, 6, 7)}, kernel_shape=[2, 3, 2], pads=[1, 1, 0, 0, 1, 1], tag="3d"
    ),
    case("MaxPool", {"x": X}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], exact=True),
    case("MaxPool", {"x": X10}, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, exact=True, tag="ceil"),
    case(
        "MaxPool",
        {"x": X},
        kernel_shape=[2, 2],
        dilations=[2, 2],
        pads=[0, 1, 1, 0],
        exact=True,
        tag="dilated",
    ),
    case(
        "MaxPool",
        {"x": X},
        kernel_shape=[3, 2],
        strides=[2, 2],
        auto_pad="SAME_UPPER",
        exact=True,
        tag="same",
    ),
    case("MaxPool", {"x": randn(2, 3, 10)}, kernel_shape=[3], strides=[2], exact=True, tag="1d"),
    case("GlobalAveragePool", {"x": X}),
    case("GlobalMaxPool", {"x": X}, exact=True),
]

NORM = [
    case(
        "BatchNormalization",
        {"x": X, "s": randn(4), "b": randn(4), "m": randn(4), "v": np.abs(randn(4)) + 0.5},
    ),
    case(
        "BatchNormalization",
        {
            "x": STEPS,
            "s": f32(1 / 256, 1 / 256, 0.5, 2),
            "b": f32(0, 0, 1, 0),
            "m": f32(0, 0, 0, 0),
            "v": f32(1, 1, 1, 1),
        },
        epsilon=0.0,
        exact=True,
        tag="exact",
    ),
    case("InstanceNormalization", {"x": X, "s": randn(4), "b": randn(4)}, epsilon=1e-3),
    case("LayerNormalization", {"x": X, "s": randn(11), "b": randn(11)}),
    case("LayerNormalization", {"x": X, "s": randn(9, 11)}, axis=2, epsilon=1e-3, n_out=3, tag="axis2-stats"),
]

PAD = [
    case("Pad", {"x": SMALL, "p": i64(0, 0, 1, 2, 0, 1, 2, 0), "v": f32(1.5).reshape(())}, exact=True),
    case("Pad", {"x": SMALL, "p": i64(0, 0, -1, 1, 0, 0, 1, -2)}, exact=True, tag="negative-crops"),
    case(
        "Pad",
        {"x": SMALL, "xp": i64(0, 0, 1, 0, 0, 0, 0, 2), "xv": f32(-3).reshape(())},
        exact=True,
        tag="fed",
    ),
    case("Pad", {"x": SMALL, "p": i64(0, 0, 2, 1, 0, 0, 1, 3)}, mode="edge", exact=True, tag="edge"),
    case("Pad", {"x": SMALL, "p": i64(0, 0, 3, 1, 0, 0, 2, 4)}, mode="reflect", exact=True, tag="reflect"),
    case("Pad", {"x": SMALL, "p": i64(0, 1, 1, 0, 1, 0, 0, 2)}, mode="edge", exact=True, tag="edge-channels"),
    case(
        "Pad",
        {"x": SMALL, "p": i64(2, 1, 0, 3), "v": None, "a": i64(-1, 1)},
        opset=18,
        exact=True,
        tag="axes",
    ),
    case(
        "Pad", {"x": SMALL, "p": i64(0, 0, 2, 1, 0, 0, 1, 3)}, mode="wrap", opset=19, exact=True, tag="wrap"
    ),
    case(
        "Pad",
        {"x": SMALL, "p": i64(0, 0, 5, 1, 0, 0, 1, 7)},
        mode="wrap",
        opset=19,
        exact=True,
        tag="wrap-wide",
    ),
    case(
        "Pad", {"x": SMALL}, pads=[0, 0, 1, 2, 0, 0, 2, 1], value=-2.0, opset=9, exact=True, tag="attributes"
    ),
    case(
        "Pad",
        {"x": SMALL},
        pads=[0, 0, 1, 2, 0, 0, 2, 1],
        mode="reflect",
        opset=9,
        exact=True,
        tag="attr-reflect",
    ),
]

# Resize inputs: X, roi, scales, sizes (roi is only read by tf_crop_and_resize, which is refused).
IMG = randn(1, 2, 5, 7)
SCALES2 = f32(1, 1, 2, 2)


def _resize(
    ins: dict[str, np.ndarray | None], tag: str, exact: bool = False, opset: int = 13, **attrs: object
):
    return case("Resize", {"x": IMG, "r": None, **ins}, opset=opset, exact=exact, tag=tag, **attrs)


RESIZE = [
    _resize(
        {"s": SCALES2},
        "insightface-nearest",
        True,
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    ),
    _resize({"s": f32(1, 1, 1.6, 0.7)}, "nearest-default", True),
    _resize({"s": None, "z": i64(1, 2, 8, 4)}, "nearest-sizes", True),
    _resize({"s": f32(1, 1, 1.5, 2.5)}, "nearest-prefer-ceil", True, nearest_mode="round_prefer_ceil"),
    _resize(
        {"s": f32(1, 1, 0.6, 1.3)},
        "nearest-ceil-align",
        True,
        nearest_mode="ceil",
        coordinate_transformation_mode="align_corners",
    ),
    _resize(
        {"s": f32(1, 1, 3, 0.5)},
        "nearest-tf-half-pixel",
        True,
        coordinate_transformation_mode="tf_half_pixel_for_nn",
    ),
    _resize({"s": SCALES2}, "linear-half-pixel", mode="linear"),
    _resize({"xs": f32(1, 1, 1.5, 0.5)}, "scales-fed-at-run-time", mode="linear"),
    _resize({"s": f32(1, 1, 0.5, 0.75)}, "linear-shrink", mode="linear"),
    _resize({"s": None, "z": i64(1, 2, 9, 4)}, "linear-sizes", mode="linear"),
    _resize(
        {"s": SCALES2}, "linear-align-corners", mode="linear", coordinate_transformation_mode="align_corners"
    ),
    _resize(
        {"s": None, "z": i64(1, 2, 1, 12)},
        "linear-pytorch-half-pixel",
        mode="linear",
        coordinate_transformation_mode="pytorch_half_pixel",
    ),
    _resize({"s": SCALES2}, "linear-asymmetric", mode="linear", coordinate_transformation_mode="asymmetric"),
    _resize({"s": f32(1, 1, 2, 3), "z": None}, "opset18", True, opset=18),
    case("Resize", {"x": IMG, "s": f32(1, 1, 2, 3)}, opset=10, exact=True, tag="opset10-nearest"),
    case("Resize", {"x": IMG, "s": f32(1, 1, 0.6, 0.8)}, opset=10, exact=True, tag="opset10-shrink"),
    case("Resize", {"x": IMG, "s": f32(1, 1, 2, 2)}, opset=10, mode="linear", tag="opset10-linear"),
    case("Upsample", {"x": IMG, "s": f32(1, 1, 2, 3)}, opset=9, exact=True, tag="nearest"),
    case("Upsample", {"x": IMG, "s": f32(1, 1, 2, 1.5)}, opset=9, mode="linear", tag="linear"),
    case("Upsample", {"x": IMG}, opset=8, scales=[1.0, 1.0, 2.0, 3.0], exact=True, tag="opset8-attribute"),
    case("Upsample", {"x": IMG}, opset=8, scales=[1.0, 1.0, 2.0, 1.5], mode="linear", tag="opset8-linear"),
]


@pytest.mark.parametrize(("built", "feeds", "exact"), CONV + POOL + NORM + PAD + RESIZE)
def test_op_matches_onnxruntime(built, feeds, exact) -> None:
    assert_matches_onnxruntime(built, feeds, exact)


def test_small_detector_graph_matches_onnxruntime() -> None:
    """A graph in the shape of InsightFace's exports: an input BatchNormalization, Conv + BN +
    ReLU/PRelu stages (a depthwise one), a ceil_mode AveragePool shortcut, an FPN upsampling by
    nearest Resize (asymmetric, floor) cropped to a run-time Shape into an Add, and heads
    flattened per anchor with Transpose and Reshape, plus a pooled Gemm head, in one model."""

    def conv(
        name: str, x: str, c_in: int, c_out: int, k: int, group: int = 1, **attrs: object
    ) -> onnx.NodeProto:
        inits[f"{name}_w"], inits[f"{name}_b"] = randn(c_out, c_in // group, k, k) * 0.3, randn(c_out)
        return helper.make_node(
            "Conv", [x, f"{name}_w", f"{name}_b"], [name], kernel_shape=[k, k], group=group, **attrs
        )

    def bn(name: str, x: str, c: int) -> onnx.NodeProto:
        inits.update({f"{name}_s": randn(c), f"{name}_o": randn(c), f"{name}_m": randn(c)})
        inits[f"{name}_v"] = np.abs(randn(c)) + 0.5
        return helper.make_node(
            "BatchNormalization", [x, *(f"{name}_{p}" for p in "somv")], [name], epsilon=1e-3
        )

    inits: dict[str, np.ndarray] = {}
    nodes = [
        bn("bn_data", "x", 3),
        conv("c1", "bn_data", 3, 8, 3, strides=[2, 2], pads=[1, 1, 1, 1]),
        bn("c1_bn", "c1", 8),
        helper.make_node("Relu", ["c1_bn"], ["r1"]),
        conv("dw", "r1", 8, 8, 3, group=8, pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["dw", "slope"], ["p1"]),
        conv("c2", "p1", 8, 16, 3, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node(
            "AveragePool",
            ["r1"],
            ["down"],
            kernel_shape=[2, 2],
            strides=[2, 2],
            ceil_mode=1,
            count_include_pad=0,
        ),
        conv("short", "down", 8, 16, 1),
        helper.make_node("Add", ["c2", "short"], ["c2s"]),
        conv("lat2", "c2s", 16, 8, 1),
        helper.make_node(
            "Resize",
            ["lat2", "", "up_scales"],
            ["up"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        conv("lat1", "r1", 8, 8, 1),
        # odd input sizes: crop the upsampled map to the lateral one's run-time size
        helper.make_node("Shape", ["lat1"], ["hw"], start=2),
        helper.make_node("Slice", ["up", "zeros2", "hw", "axes23"], ["up_cut"]),
        helper.make_node("Add", ["lat1", "up_cut"], ["p3"]),
        conv("head", "p3", 8, 2, 3, pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["head"], ["score_map"]),
        helper.make_node("Transpose", ["score_map"], ["score_t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["score_t", "rows"], ["scores"]),
        helper.make_node("GlobalAveragePool", ["c2s"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], transB=1),
    ]
    inits.update(
        {
            "slope": randn(8, 1, 1),
            "up_scales": f32(1, 1, 2, 2),
            "rows": i64(-1, 1),
            "zeros2": i64(0, 0),
            "axes23": i64(2, 3),
        }
    )
    inits.update({"fc_w": randn(10, 16), "fc_b": randn(10)})
    x = randn(1, 3, 33, 47)  # odd sizes: the strided stages and the ceil_mode pool round differently
    built = model(nodes, {"x": x}, ["scores", "fc"], inits, opset=15)
    assert_matches_onnxruntime(built, {"x": x}, exact=False)
