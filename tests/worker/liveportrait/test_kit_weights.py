"""The project's generator of the kit's seed-0 stand-in weights (worker/liveportrait/kit_weights.py).

The reference vectors in tests/data were computed by the official code with the kit's own
generator. Ours was shown once to write byte-identical files (sha256 of all five files equal,
torch 2.13); the digests below pin the tensors it writes, key by key and in order, so the
conformance tests rely on the project's generator alone. Tensor digests rather than file digests,
because torch.save's container bytes may change between torch versions while the values may not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from worker.liveportrait.kit_weights import tensor_values
from worker.liveportrait.weights import ALL_FILES

# From the files the kit's make_weights.py wrote (seed 0); ours matched them byte for byte.
SEED0_TENSOR_DIGESTS = {
    "base_models/appearance_feature_extractor.pth": (
        "5a01fed0c5a147e0b78145a6ceef9986f992f0445402d95955788573e6325fc3"
    ),
    "base_models/motion_extractor.pth": "a3d6bb78ad4a832d39c129a22c4a4ec9013fc4f1fe528766445f78d1d54cb690",
    "base_models/warping_module.pth": "b0d3892a68948c3c82d9723017269b4096be1e196253de5ef2d8c7f44872bc15",
    "base_models/spade_generator.pth": "8e47fe442c59b6a56a11bea703d09ff1ed70154f8606961b03a1d7eefa12f9e0",
    "retargeting_models/stitching_retargeting_module.pth": (
        "a7cd2cd53137312319172453ffc0c353814b1f2861552c1cd615075b07e0817a"
    ),
}


def tensor_digest(obj: object) -> str:
    """sha256 over every key, dtype, shape and value of a state dict (or a dict of them), in order."""
    digest = hashlib.sha256()

    def feed(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                feed(f"{prefix}{key}/", item)
            return
        assert isinstance(value, torch.Tensor), f"{prefix}: unexpected {type(value).__name__}"
        digest.update(f"{prefix}{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.contiguous().numpy().tobytes())

    feed("", obj)
    return digest.hexdigest()


def test_seed0_weights_are_the_kits(kit_weights: Path) -> None:
    for rel in ALL_FILES:
        state = torch.load(kit_weights / rel, map_location="cpu", weights_only=True)
        assert tensor_digest(state) == SEED0_TENSOR_DIGESTS[rel], rel


def test_one_rule_per_kind_of_tensor() -> None:
    # Spot checks that pin the rules themselves, independent of the digests above.
    bias = tensor_values(0, "fc.bias", (1000,))
    assert bias.dtype.name == "float32" and 0.005 < float(bias.std()) < 0.015
    norm = tensor_values(0, "x.norm.weight", (4000,))
    assert abs(float(norm.mean()) - 1.0) < 0.01 and 0.09 < float(norm.std()) < 0.11
    conv = tensor_values(0, "conv.weight", (64, 16, 3, 3))
    assert abs(float(conv.std()) * 12.0 - 1.0) < 0.05  # 1/sqrt(fan_in = 144)
    var = tensor_values(0, "bn.running_var", (1000,))
    assert float(var.min()) >= 1.0
    assert tensor_values(0, "bn.num_batches_tracked", ()).dtype.name == "int64"
    # Another seed, another key: other values.
    assert not (tensor_values(1, "fc.bias", (1000,)) == bias).all()
    assert not (tensor_values(0, "fc2.bias", (1000,)) == bias).all()
