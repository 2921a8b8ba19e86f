"""M: motion extractor, a ConvNeXt-V2 backbone with keypoint, pose and expression heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import Arch
from .blocks import LayerNorm2d


class GRN(nn.Module):
    """Global response normalisation on NHWC tensors."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * n) + self.beta + x


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    HEADS = ("kp", "scale", "pitch", "yaw", "roll", "t", "exp")

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        dims, depths = arch.m_dims, arch.m_depths
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0])))
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(d) for _ in range(n))) for d, n in zip(dims, depths, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        kp3 = arch.num_kp * 3
        self.fc_kp = nn.Linear(dims[-1], kp3)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], arch.num_bins)
        self.fc_yaw = nn.Linear(dims[-1], arch.num_bins)
        self.fc_roll = nn.Linear(dims[-1], arch.num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], kp3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        feat = self.norm(x.mean(dim=(-2, -1)))
        return {name: getattr(self, f"fc_{name}")(feat) for name in self.HEADS}


class MotionExtractor(nn.Module):
    """Raw outputs: pitch/yaw/roll logits (B,bins), t (B,3), exp (B,K*3), scale (B,1), kp (B,K*3)."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.detector = ConvNeXtV2(arch)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(image)
