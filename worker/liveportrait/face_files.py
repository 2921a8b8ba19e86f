"""Where the official face pipeline's three ONNX networks sit in a weights folder.

The hub repository holds `liveportrait/` (whose contents are WEIGHTS_DIR's root, so `landmark.onnx`
sits beside `base_models/`) and `insightface/models/buffalo_l/`, kept under the same path.
"""

from __future__ import annotations

from pathlib import Path

# SCRFD-10G face detector with five keypoints (InsightFace buffalo_l).
DETECTOR_FILE = "insightface/models/buffalo_l/det_10g.onnx"
# InsightFace's 106-point landmarks: the points that drive the crop.
LANDMARK106_FILE = "insightface/models/buffalo_l/2d106det.onnx"
# LivePortrait's own 203-point landmarks: the lip and eye ratios.
LANDMARK203_FILE = "landmark.onnx"
FACE_FILES = (DETECTOR_FILE, LANDMARK106_FILE, LANDMARK203_FILE)


def face_files_present(weights_dir: Path | str) -> bool:
    """True when all three files are there: the official pipeline is then the one used."""
    root = Path(weights_dir)
    return all((root / rel).is_file() for rel in FACE_FILES)
