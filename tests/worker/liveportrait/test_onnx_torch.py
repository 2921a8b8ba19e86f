"""The torch ONNX runner (worker/liveportrait/onnx_torch.py) against onnxruntime: element-wise,
linear-algebra, shape and reduction ops one node at a time, a shape-computing chain, refusals,
and the three face stand-ins (bit-identical but for the detector's sigmoid scores). The
convolution, pooling, normalisation, padding and resizing ops are in test_onnx_torch_nn.py."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from tests.worker.liveportrait.onnx_graphs import assert_matches_onnxruntime, case, f32, i64, model, randn
from worker.liveportrait.face_files import DETECTOR_FILE, LANDMARK106_FILE, LANDMARK203_FILE
from worker.liveportrait.onnx_torch import TorchOnnxModel, UnsupportedOnnxGraph, _ieee_float32

X = randn(2, 3, 4, 5)
POSITIVE = np.abs(X) + 0.1
HALVES = f32(-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -0.4999, 0.5001, 2.4999, 1e8 + 0.5)
INTS = np.array([-7, -3, 0, 5, 9, 12], dtype=np.int64)
BOOLS = np.array([True, False, True, False])

UNARY = [
    "Relu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Exp",
    "Abs",
    "Neg",
    "Reciprocal",
    "Sign",
    "Softplus",
    "Sin",
    "Cos",
]
EXACT_UNARY = ["Abs", "Neg", "Relu", "Sign"]

CASES = [
    *(case(op, {"x": X}, exact=op in EXACT_UNARY) for op in UNARY),
    case("Log", {"x": POSITIVE}),
    case("Sqrt", {"x": POSITIVE}),
    *(case(op, {"x": HALVES * 1.25}, exact=True) for op in ("Floor", "Ceil", "Identity")),
    case("Round", {"x": HALVES}, exact=True, tag="half-to-even"),
    case("Not", {"x": BOOLS}, exact=True),
    case("LeakyRelu", {"x": X}, alpha=0.2, exact=True),
    case("LeakyRelu", {"x": X}, exact=True, tag="default-alpha"),
    case("Elu", {"x": X}, alpha=0.7),
    case("HardSigmoid", {"x": X * 4}, alpha=0.3, beta=0.4),
    case("HardSwish", {"x": X * 4}),
    case("PRelu", {"x": X, "slope": randn(3, 1, 1)}, exact=True, tag="slope-C11"),
    case("PRelu", {"x": X, "slope": randn(5)}, exact=True, tag="slope-last-axis"),
    case("PRelu", {"x": X, "slope": f32(0.25)}, exact=True, tag="slope-scalar"),
    case("Clip", {"x": X, "lo": f32(-0.5).reshape(()), "hi": f32(0.75).reshape(())}, exact=True),
    case("Clip", {"x": X, "lo": None, "hi": f32(0.75).reshape(())}, exact=True, tag="max-only"),
    case("Clip", {"x": X}, exact=True, tag="no-bounds"),
    case("Clip", {"x": X}, opset=9, min=-0.3, max=0.2, exact=True, tag="attributes"),
    case("Clip", {"x": INTS, "lo": np.array(-4), "hi": np.array(6)}, exact=True, tag="int64"),
    case("Add", {"x": X, "b": randn(4, 1)}),
    case("Sub", {"x": X, "b": randn(5)}),
    case("Mul", {"x": X, "b": randn(1, 3, 1, 1)}),
    case("Div", {"x": X, "b": randn(5) + 3}),
    case("Div", {"x": INTS, "b": np.array([2, 2, 3, -2, 4, 5], np.int64)}, exact=True, tag="int-truncates"),
    case("Pow", {"x": POSITIVE, "b": f32(1.5)}),
    case("Pow", {"x": X, "b": np.array(2, np.int64)}, tag="int-exponent"),
    *(
        case(op, {"x": HALVES, "b": f32(-0.5, 0.5, 2.5, 1.0, 0.5, 1.5, 0.0, 3.5, 0, 0, 0, 0)}, exact=True)
        for op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")
    ),
    *(
        case(op, {"x": BOOLS, "b": np.array([True, True, False, False])}, exact=True)
        for op in ("And", "Or", "Xor")
    ),
    case("Where", {"x": X > 0, "a": randn(5), "b": randn(4, 1)}, exact=True),
    *(case(op, {"x": X, "b": randn(5), "c": randn(4, 1)}) for op in ("Sum", "Mean", "Max", "Min")),
    case("Cast", {"x": HALVES * 3}, to=TensorProto.INT64, exact=True, tag="to-int64"),
    case("Cast", {"x": INTS}, to=TensorProto.FLOAT, exact=True, tag="to-float"),
    case("Cast", {"x": X}, to=TensorProto.BOOL, exact=True, tag="to-bool"),
    case("MatMul", {"x": randn(2, 3, 4), "w": randn(4, 6)}),
    case("MatMul", {"x": randn(3, 4), "w": randn(2, 4, 6)}, tag="batched-right"),
    case("Gemm", {"x": randn(3, 4), "w": randn(6, 4), "c": randn(6)}, transB=1),
    case("Gemm", {"x": randn(4, 3), "w": randn(4, 6), "c": randn(3, 1)}, transA=1, alpha=0.5, beta=2.0),
    case("Gemm", {"x": randn(3, 4), "w": randn(4, 6)}, alpha=3.0, tag="no-C"),
    case("Gemm", {"x": randn(3, 4), "w": randn(6, 4), "c": f32(0.5)}, transB=1, tag="scalar-C"),
    case("Concat", {"x": X, "b": randn(2, 1, 4, 5)}, axis=1, exact=True),
    case("Concat", {"x": X, "b": randn(2, 3, 4, 2)}, axis=-1, exact=True, tag="negative-axis"),
    case("Split", {"x": X, "s": i64(1, 3, 1)}, axis=3, n_out=3, exact=True, tag="input"),
    case("Split", {"x": X}, axis=1, split=[2, 1], n_out=2, opset=11, exact=True, tag="attribute"),
    case("Split", {"x": X}, axis=-2, n_out=2, exact=True, tag="equal"),
    case("Split", {"x": X}, axis=3, num_outputs=2, n_out=2, opset=18, exact=True, tag="num-outputs-uneven"),
    case("Slice", {"x": X, "s": i64(1, -4), "e": i64(2**62, -1), "a": i64(1, 3)}, exact=True, tag="clamped"),
    case(
        "Slice",
        {"x": X, "s": i64(-1, 3), "e": i64(-(2**62), 0), "a": i64(3, 2), "p": i64(-2, -1)},
        exact=True,
    ),
    case("Slice", {"x": X, "s": i64(0), "e": i64(5), "a": i64(-1), "p": i64(2)}, exact=True, tag="step-2"),
    case("Slice", {"x": X}, opset=9, starts=[1, 0], ends=[3, -1], axes=[2, 3], exact=True, tag="attributes"),
    case("Gather", {"x": X, "i": i64(2, 0, -1)}, axis=1, exact=True),
    case("Gather", {"x": X, "i": np.array([[0, -1], [1, 2]], np.int64)}, axis=-1, exact=True, tag="2d-index"),
    case("Gather", {"x": X, "i": np.array(-2, np.int64)}, axis=2, exact=True, tag="scalar-index"),
    case("Transpose", {"x": X}, perm=[0, 2, 3, 1], exact=True),
    case("Transpose", {"x": X}, exact=True, tag="reversed"),
    case("Reshape", {"x": X, "s": i64(0, -1, 5)}, exact=True, tag="zero-and-minus-one"),
    case("Reshape", {"x": X, "s": i64(-1)}, exact=True, tag="flat"),
    case(
        "Reshape",
        {"x": np.zeros((0, 3), np.float32), "s": i64(3, 0)},
        allowzero=1,
        exact=True,
        tag="allowzero",
    ),
    *(case("Flatten", {"x": X}, axis=a, exact=True, tag=f"axis{a}") for a in (0, 2, -1, 4)),
    case("Squeeze", {"x": randn(1, 3, 1, 5), "a": i64(-2)}, exact=True),
    case("Squeeze", {"x": randn(1, 3, 1, 5)}, exact=True, tag="all"),
    case("Squeeze", {"x": randn(1, 3, 1, 5)}, opset=11, axes=[0], exact=True, tag="attribute"),
    case("Unsqueeze", {"x": X, "a": i64(-1, 0)}, exact=True),
    case("Unsqueeze", {"x": X}, opset=11, axes=[1, 5], exact=True, tag="attribute"),
    case("Shape", {"x": X}, exact=True),
    case("Shape", {"x": X}, start=1, end=-1, exact=True, tag="start-end"),
    case("Size", {"x": X}, exact=True),
    case("ConstantOfShape", {"x": i64(2, 3)}, exact=True),
    case(
        "ConstantOfShape",
        {"x": i64(4)},
        value=helper.make_tensor("v", TensorProto.INT64, [1], [7]),
        exact=True,
    ),
    case("Expand", {"x": randn(3, 1), "s": i64(2, 1, 4)}, exact=True),
    case("Tile", {"x": randn(2, 3), "r": i64(2, 3)}, exact=True),
    case(
        "Range",
        {"x": np.array(1.5, np.float32), "l": np.array(7, np.float32), "d": np.array(1.25, np.float32)},
    ),
    case(
        "Range",
        {"x": np.array(10, np.int64), "l": np.array(-3, np.int64), "d": np.array(-4, np.int64)},
        exact=True,
    ),
    case("ReduceMean", {"x": X}, axes=[1, -1], keepdims=0, opset=13),
    case("ReduceMean", {"x": X, "a": i64(2)}, opset=18, tag="axes-input"),
    case("ReduceSum", {"x": X, "a": i64(0, 2)}, opset=13),
    case("ReduceSum", {"x": X}, keepdims=0, opset=13, tag="all"),
    case("ReduceSum", {"x": X, "a": np.zeros(0, np.int64)}, noop_with_empty_axes=1, exact=True, tag="noop"),
    case("ReduceMax", {"x": X}, axes=[3], opset=13, exact=True),
    case("ReduceMin", {"x": X, "a": i64(1)}, keepdims=0, opset=18, exact=True),
    case("ReduceProd", {"x": X}, axes=[1, 2], opset=13),
    case("ArgMax", {"x": X}, axis=2, exact=True),
    case("ArgMin", {"x": X}, axis=-1, keepdims=0, exact=True),
    case("Softmax", {"x": X}, axis=1),
    case("Softmax", {"x": X}, opset=11, tag="opset11-flattens-at-axis"),
    case("LogSoftmax", {"x": X}, axis=-1),
    case("LogSoftmax", {"x": X}, axis=2, opset=11, tag="opset11"),
    case("Dropout", {"x": X}, exact=True),
]


@pytest.mark.parametrize(("built", "feeds", "exact"), CASES)
def test_op_matches_onnxruntime(built, feeds, exact) -> None:
    assert_matches_onnxruntime(built, feeds, exact)


def test_shape_chain_and_constants() -> None:
    """A shape computed at run time, as exports write `x.view(x.size(0), -1)` and a channel
    split: Shape, Gather, Unsqueeze, Concat, Reshape, with Constant nodes of each kind."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Constant", [], ["minus1"], value_ints=[-1]),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Constant", [], ["scale"], value_float=0.5),
        helper.make_node("Mul", ["flat", "scale"], ["y"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["shape_f", "scale"], ["half_shape"]),
    ]
    built = model(nodes, {"x": X}, ["y", "half_shape", "target"], {"axes": i64(0)})
    assert_matches_onnxruntime(built, {"x": X}, exact=True)


def test_interface_and_refusals() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["y"], ["z"])]
    built = model(nodes, {"x": X}, ["z", "y"], {"w": X})
    runner = TorchOnnxModel(built.SerializeToString())
    assert runner.input_names == ["x"] and runner.output_names == ["z", "y"]
    z, y = runner.run({"x": torch.from_numpy(X)})
    assert torch.equal(y, torch.relu(torch.from_numpy(X))) and torch.equal(z, -y)
    with pytest.raises(ValueError, match="takes the inputs"):
        runner.run({"input": X})

    unknown = model([helper.make_node("NonMaxSuppression", ["x", "s"], ["y"])], {"x": X, "s": X}, [])
    with pytest.raises(UnsupportedOnnxGraph, match="NonMaxSuppression"):
        TorchOnnxModel(unknown)
    cubic = case("Resize", {"x": X, "r": None, "s": f32(1, 1, 2, 2)}, mode="cubic").values[0]
    with pytest.raises(UnsupportedOnnxGraph, match=r"Resize .*mode=cubic"):
        TorchOnnxModel(cubic)
    odd = helper.make_node("Relu", ["x"], ["y"], name="r1", flavour=3)
    with pytest.raises(UnsupportedOnnxGraph, match=r"Relu \(node 'r1'\): unsupported attribute\(s\) flavour"):
        TorchOnnxModel(model([odd], {"x": X}, []))
    custom = model([helper.make_node("Relu", ["x"], ["y"])], {"x": X}, [])
    custom.graph.node[0].domain = "com.microsoft"
    with pytest.raises(UnsupportedOnnxGraph, match="com.microsoft"):
        TorchOnnxModel(custom)
    assert issubclass(UnsupportedOnnxGraph, ValueError)


def test_cuda_runs_in_full_float32() -> None:
    """On CUDA a run turns TF32 off for convolutions and matrix products, then restores the flags
    (flags only, so this runs on any machine)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        with _ieee_float32(torch.device("cuda")):
            assert not cudnn.allow_tf32 and not matmul.allow_tf32
        assert cudnn.allow_tf32 and matmul.allow_tf32
        with _ieee_float32(torch.device("cpu")):
            assert cudnn.allow_tf32
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def _standin_inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        DETECTOR_FILE: ((rng.integers(0, 256, (1, 3, 512, 512)) - 127.5) / 128).astype(np.float32),
        LANDMARK106_FILE: rng.integers(0, 256, (1, 3, 192, 192)).astype(np.float32),
        LANDMARK203_FILE: (rng.integers(0, 256, (1, 3, 224, 224)) / 255).astype(np.float32),
    }


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # the detector's declared 640x640 output shapes warn at 512
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_face_standins_match_onnxruntime(face_standins: Path) -> None:
    """The stand-ins are exact arithmetic up to the detector's Sigmoid, so every output is
    bit-identical but its three score outputs, which agree to 1e-6."""
    for seed in (0, 1):
        for relative, x in _standin_inputs(seed).items():
            session = _session(face_standins / relative)
            expected = session.run(None, {session.get_inputs()[0].name: x})
            runner = TorchOnnxModel(face_standins / relative)
            got = [t.numpy() for t in runner.run({runner.input_names[0]: x})]
            assert runner.output_names == [o.name for o in session.get_outputs()]
            for i, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
                assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
                if relative == DETECTOR_FILE and i < 3:
                    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
                else:
                    np.testing.assert_array_equal(ours, theirs)


def _best_ms(call: Callable[[], object], repeats: int = 10) -> float:
    call()
    best = math.inf
    for _ in range(repeats):  # the best of several: this machine's 2 cores are shared
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def test_face_standins_timing(face_standins: Path) -> None:
    """Printed, not asserted (run with -s): the best time per call on this CPU of onnxruntime at
    2 threads and of the torch runner at 2 and at 1 thread (torch's OpenMP threads wait long
    for each other when the machine's cores are busy)."""
    torch_threads = torch.get_num_threads()
    try:
        for relative, x in _standin_inputs(0).items():
            session, runner = _session(face_standins / relative), TorchOnnxModel(face_standins / relative)
            feeds = {session.get_inputs()[0].name: x}
            line = f"{relative}: onnxruntime {_best_ms(partial(session.run, None, feeds)):.2f} ms"
            for threads in (2, 1):
                torch.set_num_threads(threads)
                line += f", torch/{threads} {_best_ms(partial(runner.run, feeds)):.2f} ms"
            print(line + " per call")
    finally:
        torch.set_num_threads(torch_threads)
