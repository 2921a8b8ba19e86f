"""Prepared portraits: what an edit needs that depends only on the image and its crop settings,
and the small cache that lets several edits of one image share it."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from core.edit_params import EditParams

from . import keypoints as kp


@dataclass
class PreparedPortrait:
    """Everything an edit needs that depends only on the image and the crop settings."""

    image: np.ndarray  # the decoded original, RGB uint8, at full resolution
    m_c2o: np.ndarray | None  # crop -> original, 3x3; None without a crop (flag_do_crop=false)
    crop_size: int
    feature: torch.Tensor  # F's volume
    motion: kp.SourceMotion
    x_s: torch.Tensor
    lip_ratio: float | None  # None when no face landmarks were available
    source: np.ndarray | None = None  # the (1, 3, 256, 256) network input, kept for tests
    faces_found: int = 0


def portrait_key(image: bytes, params: EditParams) -> tuple[object, ...]:
    """What a prepared portrait depends on: the image bytes and the fields read before the edit."""
    return (
        hashlib.sha256(image).digest(),
        params.flag_do_crop,
        params.flag_do_rot,
        params.dsize,
        params.scale,
        params.vx_ratio,
        params.vy_ratio,
        params.enable_safety_checker,
        params.flag_lip_zero,
        params.face_index,
    )


class PortraitCache:
    """A small LRU of prepared portraits, so that several edits of one image (the slider
    workflow) skip decoding, detection, cropping and the appearance and motion networks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[object, ...], PreparedPortrait] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[object, ...]) -> PreparedPortrait | None:
        with self._lock:
            prep = self._items.get(key)
            if prep is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return prep

    def put(self, key: tuple[object, ...], prep: PreparedPortrait) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = prep
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
