"""Building blocks shared by the LivePortrait networks.

Attribute names are part of the checkpoint format: they become state-dict keys, so they follow the
official files exactly (`conv`, `norm`, `weight_orig`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameBlock2d(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU (or LeakyReLU 0.01), resolution kept."""

    def __init__(self, in_ch: int, out_ch: int, *, lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x) if self.lrelu else F.relu(x)


class DownBlock2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """Halves height and width, keeps depth."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Doubles height and width (nearest), keeps depth."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt's "channels_first" variant)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SNConv2d(nn.Module):
    """A Conv2d stored the way legacy `torch.nn.utils.spectral_norm` stores it.

    In eval mode the legacy hook runs no power iteration, so the effective weight is
    weight_orig / (u . (W v)). It is a pure function of the loaded tensors, which lets
    `fold()` compute it once instead of on every call.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, bias: bool = True) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        # Bias before weight_orig: legacy spectral_norm re-registers the weight after the bias, and
        # this order is the official files' (kit_weights reproduces them byte for byte).
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_orig = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.ones(out_ch))
        self.register_buffer("weight_v", torch.ones(in_ch * kernel_size * kernel_size))
        self._folded: torch.Tensor | None = None

    def effective_weight(self) -> torch.Tensor:
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def fold(self) -> None:
        with torch.no_grad():
            self._folded = self.effective_weight().detach().clone()

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # keep the folded copy on the same device/dtype as the parameters
        out = super()._apply(fn, recurse)
        if self._folded is not None:
            self._folded = fn(self._folded)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._folded if self._folded is not None else self.effective_weight()
        return F.conv2d(x, weight, self.bias, padding=self.padding)
