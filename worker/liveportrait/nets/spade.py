"""G: SPADE decoder, warped features (B,C,64,64) -> image (B,3,512,512) in [0,1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import Arch
from .blocks import SNConv2d


class SPADE(nn.Module):
    """Instance norm (no affine) modulated by gamma/beta predicted from the label map."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        if segmap.shape[-2:] != x.shape[-2:]:
            segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        # Declared in the official order (convolutions, then norms), which is the checkpoints' key order.
        self.conv_0 = SNConv2d(fin, fmid, 3)
        self.conv_1 = SNConv2d(fmid, fout, 3)
        if self.learned_shortcut:
            self.conv_s = SNConv2d(fin, fout, 1, bias=False)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmid, label_nc, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        ic = arch.warp_channels
        hidden = arch.g_spade_hidden
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        self.num_middle = arch.g_num_middle
        for i in range(arch.g_num_middle):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic, hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, ic, hidden)
        self.up_1 = SPADEResnetBlock(ic, arch.g_out_channels, ic, hidden)
        self.conv_img = nn.Sequential(
            nn.Conv2d(arch.g_out_channels, 3 * 4, kernel_size=3, padding=1), nn.PixelShuffle(2)
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)
        for i in range(self.num_middle):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.sigmoid(x)

    def fold_spectral_norm(self) -> None:
        for module in self.modules():
            if isinstance(module, SNConv2d):
                module.fold()
