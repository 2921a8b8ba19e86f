"""Rebuild tests/data from the conformance kit and scikit-image's photos (run by hand, never by tests).

    python tests/data/extract_kit.py KIT_DIR SKIMAGE_DATA_DIR

KIT_DIR holds `vectors_seed0.npz` and `crop_cv410.npz`; SKIMAGE_DATA_DIR is scikit-image's
`skimage/data` folder (from its wheel). Small arrays are kept whole; each large tensor keeps
SUBSET_SIZE elements at indices from `stratified_indices` (seed 0), which cover every index along
every axis, so a change that touches any channel, row, column or depth slice is seen. The images
that tests compare pixel by pixel with their geometry (the source, the crops, the paste-back,
edit 1's decoded image, the network input) are kept whole as lossless PNG.

OpenCV: the kit's `crop_img512` (and `input_crop256`, `input_tensor` from it) were made with OpenCV
5.x by mistake; the official code pins 4.10, whose bilinear warp samples on a 1/32-pixel grid.
`crop_cv410.npz` holds the same two crops made with 4.10.0.84 from the same source and
`crop_M_o2c`: they are carried as `*_cv410.png` and the crop step is tested against them. The 5.x
`crop_img512` is not carried; the 5.x `input_crop256` is, because every network array of the kit
was computed from it (`input_tensor`) and stays valid.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SUBSET_SIZE = 8192
WHOLE_PNG = {
    "source_image": HERE / "astronaut.png",
    "input_crop256": HERE / "kit" / "input_crop256.png",
    "edit1_image_u8": HERE / "kit" / "edit1_image_u8.png",
    "pasteback_image": HERE / "kit" / "pasteback_image.png",
}
# Re-derived from input_crop256 when loading (it is exactly input_crop256 / 255).
DERIVED = {"input_tensor"}
# Made with OpenCV 5.x; superseded by crop_cv410.npz's crop_img512 (CV410_PNG).
SUPERSEDED = {"crop_img512"}
CV410_PNG = {
    "crop_img512": HERE / "kit" / "crop_img512_cv410.png",
    "input_crop256": HERE / "kit" / "input_crop256_cv410.png",
}
SUBSET_MIN_ELEMENTS = 100_000


def stratified_indices(shape: tuple[int, ...], count: int, seed: int = 0) -> np.ndarray:
    """`count` flat indices into `shape` whose coordinates take every value of every axis."""
    rng = np.random.default_rng(seed)
    coords = [rng.permutation(np.resize(np.arange(size), count)) for size in shape]
    return np.ravel_multi_index(coords, shape).astype(np.int64)


def write_cv410(kit_dir: Path) -> None:
    """The 4.10 crops as lossless PNG, checked to read back identical."""
    with np.load(kit_dir / "crop_cv410.npz") as data:
        assert str(data["opencv_version"]).startswith("4.10"), data["opencv_version"]
        for key, path in CV410_PNG.items():
            value = data[key]
            assert value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3
            Image.fromarray(value).save(path, optimize=True)
            with Image.open(path) as img:
                assert np.array_equal(np.asarray(img.convert("RGB")), value)


def main(kit_dir: Path, skimage_dir: Path) -> None:
    with np.load(kit_dir / "vectors_seed0.npz") as data:
        kit = {key: data[key] for key in data.files}
    assert np.array_equal(kit["input_tensor"][0].transpose(1, 2, 0), kit["input_crop256"] / np.float32(255))
    out: dict[str, np.ndarray] = {}
    for key, value in kit.items():
        if key in DERIVED or key in SUPERSEDED:
            continue
        if key in WHOLE_PNG:
            Image.fromarray(value).save(WHOLE_PNG[key], optimize=True)
        elif value.size >= SUBSET_MIN_ELEMENTS:
            idx = stratified_indices(value.shape, SUBSET_SIZE)
            out[f"{key}.index"] = idx.astype(np.int32)
            out[f"{key}.values"] = value.reshape(-1)[idx]
            out[f"{key}.shape"] = np.array(value.shape, dtype=np.int64)
        else:
            out[key] = value
    np.savez_compressed(HERE / "kit" / "vectors_seed0_subset.npz", **out)
    write_cv410(kit_dir)
    for name in ("mask_template.png", "manifest.json"):
        shutil.copy(kit_dir / name, HERE / "kit" / name)
    for name in ("chelsea", "coffee"):
        Image.open(skimage_dir / f"{name}.png").convert("RGB").save(HERE / f"{name}.jpg", quality=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
