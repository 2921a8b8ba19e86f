"""Architecture hyper-parameters: the official configuration, and a narrow one for fast tests.

The narrow ("tiny") configuration keeps every code path of the full one (same module types,
same keypoint count, same 256 -> 512 resolutions) with far fewer channels, so that service
tests can run real edits on a CPU in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str
    num_kp: int = 21
    num_bins: int = 66
    # appearance feature extractor (F) and the 3D feature volume it produces
    f_block_expansion: int = 64
    f_max_features: int = 512
    feat_channels: int = 32  # reshape_channel
    feat_depth: int = 16  # reshape_depth
    f_num_resblocks: int = 6
    # motion extractor (M): ConvNeXt-V2
    m_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    m_depths: tuple[int, int, int, int] = (3, 3, 9, 3)
    # warping module (W) and its dense-motion hourglass
    w_block_expansion: int = 64
    dm_block_expansion: int = 32
    dm_max_features: int = 1024
    dm_num_blocks: int = 5
    dm_compress: int = 4
    # SPADE decoder (G)
    g_num_middle: int = 6
    g_out_channels: int = 64
    g_spade_hidden: int = 128

    @property
    def warp_channels(self) -> int:
        """Channels of W's output, which is also G's input and SPADE label map."""
        return self.w_block_expansion * 4


FULL = Arch(name="full")

TINY = Arch(
    name="tiny",
    f_block_expansion=8,
    f_max_features=64,
    feat_channels=4,
    f_num_resblocks=1,
    m_dims=(16, 32, 48, 64),
    m_depths=(1, 1, 1, 1),
    w_block_expansion=8,
    dm_block_expansion=8,
    dm_max_features=32,
    dm_num_blocks=3,
    dm_compress=2,
    g_num_middle=1,
    g_out_channels=8,
    g_spade_hidden=16,
)

ARCHES = {a.name: a for a in (FULL, TINY)}


def get_arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise ValueError(f"unknown engine architecture {name!r}; choose one of {sorted(ARCHES)}") from None
