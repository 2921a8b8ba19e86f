"""Small ONNX graphs built in the tests, and the check that the torch runner (`onnx_torch`)
evaluates them as onnxruntime does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from worker.liveportrait.onnx_torch import TorchOnnxModel


def model(
    nodes: Sequence[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    outputs: Sequence[str],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A model whose graph inputs are `feeds` and constants `inits`; the outputs' types come from
    ONNX shape inference, so a case only names them."""
    graph = helper.make_graph(
        list(nodes),
        "case",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in feeds.items()
        ],
        [helper.make_value_info(name, onnx.TypeProto()) for name in outputs],
        [numpy_helper.from_array(a, n) for n, a in (inits or {}).items()],
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    return onnx.shape_inference.infer_shapes(built, strict_mode=True)


def case(
    op_type: str,
    ins: dict[str, np.ndarray | None],
    *,
    n_out: int = 1,
    opset: int = 17,
    exact: bool = False,
    tag: str = "",
    **attrs: Any,
) -> Any:
    """One node. Inputs named x* are fed, the others are initializers, and None is an omitted
    optional input. exact: the op is exact arithmetic (or a copy), so the outputs must be equal."""
    feeds = {n: a for n, a in ins.items() if a is not None and n.startswith("x")}
    inits = {n: a for n, a in ins.items() if a is not None and not n.startswith("x")}
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, [n if a is not None else "" for n, a in ins.items()], outs, **attrs)
    built = model([node], feeds, outs, inits, opset)
    return pytest.param(built, feeds, exact, id=f"{op_type}-{tag}" if tag else op_type)


def assert_matches_onnxruntime(built: onnx.ModelProto, feeds: dict[str, np.ndarray], exact: bool) -> None:
    session = ort.InferenceSession(built.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    got = TorchOnnxModel(built).run(feeds)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        ours_np = ours.cpu().numpy()
        assert ours_np.dtype == theirs.dtype and ours_np.shape == theirs.shape
        if exact:
            np.testing.assert_array_equal(ours_np, theirs)
        else:
            np.testing.assert_allclose(ours_np, theirs, rtol=1e-5, atol=1e-6)


RNG = np.random.default_rng(12)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)
