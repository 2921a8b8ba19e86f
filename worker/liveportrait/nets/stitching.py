"""S: the stitching and retargeting MLPs (Linear/ReLU stacks)."""

from __future__ import annotations

import torch
from torch import nn

# (input, hidden..., output) per checkpoint entry
STITCHING_SHAPES: dict[str, tuple[int, ...]] = {
    "retarget_shoulder": (126, 128, 128, 64, 65),
    "retarget_mouth": (65, 128, 128, 64, 63),
    "retarget_eye": (66, 256, 256, 128, 128, 64, 63),
}


class StitchingRetargetingNetwork(nn.Module):
    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
