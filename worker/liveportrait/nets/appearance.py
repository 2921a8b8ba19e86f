"""F: appearance feature extractor, image (B,3,256,256) -> 3D feature volume (B,C,D,64,64)."""

from __future__ import annotations

import torch
from torch import nn

from ..arch import Arch
from .blocks import DownBlock2d, ResBlock3d, SameBlock2d


class AppearanceFeatureExtractor(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        be, mf = arch.f_block_expansion, arch.f_max_features
        self.first = SameBlock2d(3, be)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(mf, be * 2**i), min(mf, be * 2 ** (i + 1))) for i in range(2)
        )
        self.second = nn.Conv2d(min(mf, be * 4), mf, kernel_size=1)
        self.channels, self.depth = arch.feat_channels, arch.feat_depth
        assert self.channels * self.depth == mf, "feature volume must hold exactly max_features channels"
        self.resblocks_3d = nn.Sequential()
        for i in range(arch.f_num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(self.channels))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        return self.resblocks_3d(x.view(b, self.channels, self.depth, h, w))
