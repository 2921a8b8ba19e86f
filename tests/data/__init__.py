"""Data the tests carry, so that a plain clone passes them: photos and the conformance kit's vectors.

Where it came from and how it was cut down: extract_kit.py (run by hand from the kit, never by tests).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

DATA_DIR = Path(__file__).resolve().parent
KIT_DIR = DATA_DIR / "kit"


def photo(name: str) -> np.ndarray:
    """One carried photo as HxWx3 uint8 RGB: astronaut (the kit's source image), chelsea, coffee."""
    matches = sorted(DATA_DIR.glob(f"{name}.*"))
    if not matches:
        raise FileNotFoundError(f"no photo {name!r} in {DATA_DIR}")
    with Image.open(matches[0]) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))


class KitVectors:
    """The kit's arrays by their kit names. Large tensors are kept as a subset: `expected(name)`
    gives (flat indices, values) for those, and `pick(name, array)` takes the same elements of an
    array computed here, so one comparison covers both cases.

    OpenCV: the kit's crops were made with OpenCV 5.x by mistake. `crop_img512_cv410` and
    `input_crop256_cv410` are the same crops under OpenCV 4.10 (the official pin), the ones the
    crop step is tested against; the 5.x `crop_img512` is not carried. `input_crop256` is the 5.x
    one, kept because `input_tensor` (and so every network array of the kit) was made from it."""

    def __init__(self) -> None:
        with np.load(KIT_DIR / "vectors_seed0_subset.npz") as data:
            raw = {key: data[key] for key in data.files}
        self.whole: dict[str, np.ndarray] = {k: v for k, v in raw.items() if "." not in k}
        self.subsets: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, ...]]] = {}
        for key in raw:
            if key.endswith(".index"):
                name = key[: -len(".index")]
                shape = tuple(int(s) for s in raw[f"{name}.shape"])
                self.subsets[name] = (raw[key].astype(np.int64), raw[f"{name}.values"], shape)
        for png in (
            "input_crop256",
            "crop_img512_cv410",
            "input_crop256_cv410",
            "edit1_image_u8",
            "pasteback_image",
        ):
            with Image.open(KIT_DIR / f"{png}.png") as img:
                self.whole[png] = np.asarray(img.convert("RGB"))
        self.whole["source_image"] = photo("astronaut")
        crop = self.whole["input_crop256"]
        self.whole["input_tensor"] = np.ascontiguousarray(
            (crop.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
        )

    def __contains__(self, name: str) -> bool:
        return name in self.whole or name in self.subsets

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.subsets:
            raise KeyError(f"{name} is carried as a subset; use expected() / pick()")
        return self.whole[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.subsets[name][2] if name in self.subsets else tuple(self.whole[name].shape)

    def expected(self, name: str) -> np.ndarray:
        """The reference values: the whole array, or the carried subset (flat)."""
        if name in self.subsets:
            return self.subsets[name][1]
        return self.whole[name]

    def pick(self, name: str, array: np.ndarray) -> np.ndarray:
        """`array` (shaped like the kit's `name`) reduced to what `expected(name)` holds."""
        array = np.asarray(array)
        if array.shape != self.shape(name):
            raise ValueError(f"{name}: shape {array.shape} != {self.shape(name)}")
        if name in self.subsets:
            return array.reshape(-1)[self.subsets[name][0]]
        return array


@functools.lru_cache(maxsize=1)
def kit_vectors() -> KitVectors:
    return KitVectors()
