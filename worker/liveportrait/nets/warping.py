"""W: warping module. Estimates a dense 3D flow from source/driving keypoints and warps F's volume.

Two quirks of the official network are kept on purpose because the checkpoints were trained with
them: the coordinate grid has align_corners=True spacing (exactly -1..1) while every grid_sample
uses align_corners=False, and the keypoint motions are pure translations (no Jacobians).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import Arch
from .blocks import DownBlock3d, SameBlock2d, UpBlock3d

KP_VARIANCE = 0.01


def coordinate_grid(depth: int, height: int, width: int, *, like: torch.Tensor) -> torch.Tensor:
    """(D,H,W,3) grid whose last axis is (x, y, z), each running exactly from -1 to 1."""

    def axis(n: int) -> torch.Tensor:
        return 2.0 * (torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)) - 1.0

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack((x, y, z), dim=-1)


class Encoder(nn.Module):
    def __init__(self, be: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(
                in_features if i == 0 else min(max_features, be * 2**i), min(max_features, be * 2 ** (i + 1))
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, be: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            blocks.append(
                UpBlock3d(mult * min(max_features, be * 2 ** (i + 1)), min(max_features, be * 2**i))
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = be + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    def __init__(self, be: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = Encoder(be, in_features, num_blocks, max_features)
        self.decoder = Decoder(be, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.num_kp = arch.num_kp
        in_features = (arch.num_kp + 1) * (arch.dm_compress + 1)
        self.hourglass = Hourglass(
            arch.dm_block_expansion, in_features, arch.dm_num_blocks, arch.dm_max_features
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, arch.num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(arch.feat_channels, arch.dm_compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(arch.dm_compress, affine=True)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * arch.feat_depth, 1, kernel_size=7, padding=3)

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b, _, d, h, w = feature.shape
        k = self.num_kp
        feat = F.relu(self.norm(self.compress(feature)))  # (B,c,D,H,W)
        c = feat.shape[1]

        grid = coordinate_grid(d, h, w, like=feat)  # (D,H,W,3)
        # background motion (identity) followed by one pure translation per keypoint
        shift = (kp_source - kp_driving).view(b, k, 1, 1, 1, 3)
        motions = torch.cat(
            [grid.expand(b, 1, d, h, w, 3), grid.unsqueeze(0) + shift], dim=1
        )  # (B,K+1,D,H,W,3)

        repeated = feat.unsqueeze(1).expand(b, k + 1, c, d, h, w).reshape(b * (k + 1), c, d, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(b * (k + 1), d, h, w, 3), align_corners=False)
        deformed = deformed.view(b, k + 1, c, d, h, w)

        def gaussian(kp: torch.Tensor) -> torch.Tensor:
            diff = grid.unsqueeze(0) - kp.view(b, k, 1, 1, 1, 3)
            return torch.exp(-0.5 * diff.pow(2).sum(-1) / KP_VARIANCE)  # (B,K,D,H,W)

        heat = gaussian(kp_driving) - gaussian(kp_source)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)  # (B,K+1,1,D,H,W)

        hourglass_in = torch.cat([heat, deformed], dim=2).view(b, (k + 1) * (c + 1), d, h, w)
        prediction = self.hourglass(hourglass_in)

        mask = torch.softmax(self.mask(prediction), dim=1)  # (B,K+1,D,H,W)
        deformation = torch.einsum("bkdhw,bkdhwc->bdhwc", mask, motions)
        occlusion = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return {"deformation": deformation, "occlusion_map": occlusion, "mask": mask}


class WarpingNetwork(nn.Module):
    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(arch)
        out_ch = arch.warp_channels
        self.third = SameBlock2d(arch.feat_channels * arch.feat_depth, out_ch, lrelu=True)
        self.fourth = nn.Conv2d(out_ch, out_ch, kernel_size=1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        warped = F.grid_sample(feature_3d, motion["deformation"], align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w)))
        out = out * motion["occlusion_map"]
        return {"out": out, "occlusion_map": motion["occlusion_map"], "deformation": motion["deformation"]}
