"""Checkpoint files in the official `liveportrait/` layout, and their strict loading.

Every key and shape must match the architecture; a missing, extra or misshapen tensor is an error
naming the file and the key. Files load with `weights_only=True`, so a checkpoint can never run
code on the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .arch import Arch, get_arch
from .errors import WeightsError
from .nets.appearance import AppearanceFeatureExtractor
from .nets.motion import MotionExtractor
from .nets.spade import SPADEDecoder
from .nets.stitching import STITCHING_SHAPES, StitchingRetargetingNetwork
from .nets.warping import WarpingNetwork

BASE_FILES = {
    "appearance_feature_extractor": "base_models/appearance_feature_extractor.pth",
    "motion_extractor": "base_models/motion_extractor.pth",
    "warping_module": "base_models/warping_module.pth",
    "spade_generator": "base_models/spade_generator.pth",
}
STITCHING_FILE = "retargeting_models/stitching_retargeting_module.pth"
ALL_FILES = (*BASE_FILES.values(), STITCHING_FILE)
_PARALLEL_PREFIX = "module."


@dataclass
class Networks:
    appearance: AppearanceFeatureExtractor
    motion: MotionExtractor
    warping: WarpingNetwork
    decoder: SPADEDecoder
    stitching: StitchingRetargetingNetwork
    lip: StitchingRetargetingNetwork
    eye: StitchingRetargetingNetwork

    def base_modules(self) -> dict[str, nn.Module]:
        """The four base networks under their official checkpoint names (keys of BASE_FILES)."""
        return {
            "appearance_feature_extractor": self.appearance,
            "motion_extractor": self.motion,
            "warping_module": self.warping,
            "spade_generator": self.decoder,
        }

    def stitching_modules(self) -> dict[str, nn.Module]:
        """The three retargeting MLPs under their entries in the official stitching file."""
        return {"retarget_shoulder": self.stitching, "retarget_mouth": self.lip, "retarget_eye": self.eye}

    def modules(self) -> list[nn.Module]:
        return [self.appearance, self.motion, self.warping, self.decoder, self.stitching, self.lip, self.eye]


def build_networks(arch: Arch) -> Networks:
    return Networks(
        appearance=AppearanceFeatureExtractor(arch),
        motion=MotionExtractor(arch),
        warping=WarpingNetwork(arch),
        decoder=SPADEDecoder(arch),
        stitching=StitchingRetargetingNetwork(STITCHING_SHAPES["retarget_shoulder"]),
        lip=StitchingRetargetingNetwork(STITCHING_SHAPES["retarget_mouth"]),
        eye=StitchingRetargetingNetwork(STITCHING_SHAPES["retarget_eye"]),
    )


def save_official_layout(
    nets: Networks, dest: Path, state_dict_of: Callable[[nn.Module], dict[str, torch.Tensor]]
) -> list[Path]:
    """Write the five checkpoint files of `nets` under `dest` as the official release lays them
    out, each module's tensors given by `state_dict_of`; returns their paths."""
    written: list[Path] = []
    for name, module in nets.base_modules().items():
        path = dest / BASE_FILES[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dict_of(module), path)
        written.append(path)
    # The retargeting file was saved from data-parallel modules, hence the prefix on every key.
    bundle = {
        part: {_PARALLEL_PREFIX + key: value for key, value in state_dict_of(module).items()}
        for part, module in nets.stitching_modules().items()
    }
    path = dest / STITCHING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, path)
    return [*written, path]


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Data-parallel checkpoints prefix every key with `module.`; the official loader drops it."""
    return {key.replace(_PARALLEL_PREFIX, ""): value for key, value in state.items()}


def _read(path: Path) -> object:
    if not path.is_file():
        raise WeightsError(f"model weights not installed: {path} is missing (run `make weights`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise WeightsError(f"cannot read checkpoint {path}: {exc}") from exc


def check_state_dict(module: nn.Module, state: object, where: str) -> None:
    """Raise WeightsError unless `state` has exactly the module's keys and shapes."""
    if not isinstance(state, dict):
        raise WeightsError(f"{where}: expected a state dict, found {type(state).__name__}")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsError(
            f"{where}: missing tensor {missing[0]!r}"
            + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightsError(
            f"{where}: unexpected tensor {extra[0]!r}"
            + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{where}: {key!r} is not a tensor")
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )


def load_networks(weights_dir: Path | str, arch: Arch | str) -> Networks:
    """Build the networks for `arch` and load a weights folder laid out as the official one."""
    weights_dir = Path(weights_dir)
    if isinstance(arch, str):
        arch = get_arch(arch)
    if not weights_dir.is_dir():
        raise WeightsError(
            f"model weights not installed: {weights_dir} is not a directory (run `make weights`)"
        )
    nets = build_networks(arch)
    targets = nets.base_modules()
    for name, rel in BASE_FILES.items():
        path = weights_dir / rel
        state = _read(path)
        check_state_dict(targets[name], state, str(path))
        targets[name].load_state_dict(state, strict=True)  # type: ignore[arg-type]

    path = weights_dir / STITCHING_FILE
    bundle = _read(path)
    if not isinstance(bundle, dict):
        raise WeightsError(f"{path}: expected a dict of three state dicts")
    # the real file carries more entries than these three; the official loader ignores them too
    for part, module in nets.stitching_modules().items():
        if part not in bundle:
            raise WeightsError(f"{path}: missing entry {part!r}")
        state = bundle[part]
        if not isinstance(state, dict):
            raise WeightsError(f"{path}[{part!r}]: expected a state dict")
        state = strip_module_prefix(state)
        check_state_dict(module, state, f"{path}[{part!r}]")
        module.load_state_dict(state, strict=True)

    for module in nets.modules():
        module.eval().requires_grad_(False)
    return nets
