"""Deterministic stand-in weights for any architecture, written in the official file layout.

Used by tests of the other layers (with the narrow "tiny" architecture, fast on a CPU) and by
benchmarks. The value rules mirror the conformance kit's so that activations stay in a sane range.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

from .arch import Arch, get_arch
from .weights import build_networks, save_official_layout


def _value(gen: torch.Generator, key: str, ref: torch.Tensor) -> torch.Tensor:
    shape = ref.shape
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)

    def normal() -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    if key.endswith("weight_orig") or (key.endswith("weight") and len(shape) >= 2):
        fan_in = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
        return normal() / fan_in**0.5
    if key.endswith("weight"):
        return 1.0 + 0.1 * normal()
    if key.endswith("bias"):
        return 0.01 * normal()
    if key.endswith("running_mean"):
        return 0.1 * normal()
    if key.endswith("running_var"):
        return 1.0 + 0.1 * normal().abs()
    return 0.02 * normal()


def random_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    refs = module.state_dict()
    for key, ref in refs.items():
        if key.endswith(("weight_u", "weight_v")):
            continue
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        state[key] = _value(gen, key, ref)
    for key in refs:
        if key.endswith("weight_u"):
            prefix = key[: -len("weight_u")]
            w = state[prefix + "weight_orig"]
            mat = w.reshape(w.shape[0], -1).double()
            u, _, vh = torch.linalg.svd(mat, full_matrices=False)
            u0, v0 = u[:, 0], vh[0]
            if u0 @ (mat @ v0) < 0:  # make sigma positive
                u0 = -u0
            state[prefix + "weight_u"] = u0.float()
            state[prefix + "weight_v"] = v0.float()
    return {key: state[key] for key in refs}


def write_random_weights(dest: Path | str, *, arch: str | Arch = "tiny", seed: int = 0) -> Path:
    """Write a complete weights folder for `arch` under `dest`; returns `dest`."""
    dest = Path(dest)
    arch_obj = get_arch(arch) if isinstance(arch, str) else arch
    save_official_layout(build_networks(arch_obj), dest, lambda module: random_state_dict(module, seed))
    return dest
