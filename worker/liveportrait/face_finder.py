"""Which face pipeline an engine uses, behind one small interface.

The official one (SCRFD, 106 and 203 points) whenever its three ONNX files are in the weights
folder; dlib's only for a folder from before them, with a warning at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .face import Face, FoundFaces
from .face_files import FACE_FILES, face_files_present

log = logging.getLogger(__name__)


class FaceFinder(Protocol):
    name: str

    def find(
        self, rgb: np.ndarray, *, face_index: int = 0, thorough: bool = True, trace: Any = None
    ) -> FoundFaces: ...

    def lip_ratio(self, rgb: np.ndarray, face: Face, trace: Any = None) -> float: ...


def load_face_finder(weights_dir: Path | str, device: torch.device, threads: int | None = None) -> FaceFinder:
    if face_files_present(weights_dir):
        from .face_models import load_face_nets
        from .official_face import OfficialFaceFinder

        return OfficialFaceFinder(load_face_nets(weights_dir, device, threads))
    from .face import DlibFaceFinder

    log.warning(
        "face models not installed in %s (%s): using the dlib fallback, whose crops and lip ratio "
        "differ from the official pipeline's; run `make weights`",
        weights_dir,
        ", ".join(FACE_FILES),
    )
    return DlibFaceFinder()
