"""The face kit's vectors (shared/face-kit/face_vectors_seed0.npz), as carried by the tests.

    face_kit()["in1_dets"]      every carried array by its kit name (a read-only mapping)
    face_input("in2")           the kit's input images in1..in4 (HxWx3 uint8 RGB), rebuilt
    limited("in4")              that input after the official 1280 input limit (what the stages see)
    decode_png(array)           a kit `*_png` array (PNG bytes in uint8) as HxWx3 uint8 RGB

What is carried and what was left out (in1's 512 crop as PNG, in2's full paste-back): see
extract_face_kit.py, which cut this folder from the kit by hand. The inputs are not stored: they
are rebuilt from scikit-image's astronaut (tests/data/astronaut.png) and coffee (coffee.png here,
lossless) with the kit README's integer recipes, and checked against the kit's sha256.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
from PIL import Image

from tests.data import photo

FACE_KIT_DIR = Path(__file__).resolve().parent
INPUTS = ("in1", "in2", "in3", "in4")
# LivePortrait loads a source with resize_to_limit(max_dim=1280, division=2).
LIMIT_MAX_SIDE = 1280


def decode_png(array: np.ndarray) -> np.ndarray:
    """PNG bytes held in a uint8 array -> HxWx3 uint8 RGB."""
    with Image.open(io.BytesIO(np.ascontiguousarray(array, dtype=np.uint8).tobytes())) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))


@functools.lru_cache(maxsize=1)
def face_kit() -> Mapping[str, np.ndarray]:
    """Every carried array under its kit name; images that the extractor stored as `<name>.png`
    come back as the kit's uint8 arrays. Arrays are read-only: the mapping is shared."""
    arrays: dict[str, np.ndarray] = {}
    with np.load(FACE_KIT_DIR / "vectors_seed0.npz") as data:
        for key in data.files:
            if key.endswith(".png"):
                arrays[key[: -len(".png")]] = decode_png(data[key])
            else:
                arrays[key] = data[key]
    for value in arrays.values():
        value.flags.writeable = False
    return MappingProxyType(arrays)


def _coffee() -> np.ndarray:
    with Image.open(FACE_KIT_DIR / "coffee.png") as img:
        return np.asarray(img.convert("RGB"))


def _in2(astronaut: np.ndarray) -> np.ndarray:
    # Coffee mirrored out to an odd 641x900 (the input limit then drops a row), astronaut inside.
    image = np.pad(_coffee(), ((0, 241), (0, 300), (0, 0)), mode="symmetric")
    image[96:608, 340:852] = astronaut
    return image


def _in3(astronaut: np.ndarray) -> np.ndarray:
    # A portrait canvas with a vertical gradient, the astronaut, and a second, half-size one.
    y = np.arange(800, dtype=np.int64)[:, None]
    top, bottom = np.array([40, 60, 90], np.int64), np.array([200, 180, 150], np.int64)
    rows = (top * (799 - y) + bottom * y) // 799
    image = np.repeat(rows[:, None, :], 600, axis=1).astype(np.uint8)
    image[24:536, 60:572] = astronaut
    blocks = astronaut.astype(np.int64).reshape(256, 2, 256, 2, 3).sum(axis=(1, 3))
    image[536:792, 300:556] = ((blocks + 2) // 4).astype(np.uint8)
    return image


def _in4(astronaut: np.ndarray) -> np.ndarray:
    # Nearest upscale to 1200x1600: past the 1280 input limit, so the limit resizes it.
    rows = np.arange(1200) * 512 // 1200
    cols = np.arange(1600) * 512 // 1600
    return astronaut[rows][:, cols]


def _sha256_checked(name: str, image: np.ndarray, kit_key: str) -> np.ndarray:
    digest = hashlib.sha256(image.tobytes()).hexdigest()
    expected = str(face_kit()[kit_key])
    if digest != expected:
        raise ValueError(f"{kit_key}: {name} {image.shape} has sha256 {digest}, the kit's is {expected}")
    image.flags.writeable = False
    return image


@functools.lru_cache(maxsize=len(INPUTS))
def _checked_input(name: str) -> np.ndarray:
    astronaut = photo("astronaut")
    builders = {"in1": lambda a: a.copy(), "in2": _in2, "in3": _in3, "in4": _in4}
    if name not in builders:
        raise KeyError(f"no face kit input {name!r}; there are {INPUTS}")
    image = np.ascontiguousarray(builders[name](astronaut), dtype=np.uint8)
    return _sha256_checked(name, image, f"{name}_input_sha256")


def face_input(name: str) -> np.ndarray:
    """The kit's input `name` (in1..in4) as HxWx3 uint8 RGB, checked against its sha256 (a
    ValueError if the carried photos no longer rebuild it); a fresh, writable copy each call."""
    return _checked_input(name).copy()


@functools.lru_cache(maxsize=len(INPUTS))
def _checked_limited(name: str) -> np.ndarray:
    # Written from the kit README rather than taken from the engine, so that a test comparing the
    # engine's limited image with this one is not comparing the engine with itself.
    image = _checked_input(name)
    height, width = image.shape[:2]
    if max(height, width) > LIMIT_MAX_SIDE:
        # The official expression order, side * (limit / long), truncated by int().
        if height > width:
            size = (int(width * (LIMIT_MAX_SIDE / height)), LIMIT_MAX_SIDE)
        else:
            size = (LIMIT_MAX_SIDE, int(height * (LIMIT_MAX_SIDE / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    # Then both sides are cut down to even numbers by dropping the last row or column.
    even = np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])
    return _sha256_checked(name, even, f"{name}_limited_sha256")


def limited(name: str) -> np.ndarray:
    """The kit's input `name` after the official input limit (bilinear down to a 1280 long side
    when larger, then even sides): the image that detection, crop and paste-back work on. Checked
    against the kit's `<name>_limited_sha256`; a fresh, writable copy each call."""
    return _checked_limited(name).copy()
