"""Cut tests/data/face_kit/ from the face kit (run by hand, never by tests).

    .venv/bin/python tests/data/extract_face_kit.py FACE_KIT_DIR SKIMAGE_DATA_DIR

FACE_KIT_DIR holds `face_vectors_seed0.npz` (shared/face-kit); SKIMAGE_DATA_DIR is scikit-image's
`skimage/data` folder taken from its wheel (for `coffee.png`; tests/data/astronaut.png is already
skimage's astronaut, pixel for pixel). Writes:

* `face_kit/vectors_seed0.npz`: every kit array under its kit name and whole, except
  - `inN_crop_img512_png` (in1's 512 crop as PNG, 259 KB): dropped; its `_sha256`, `_shape` and
    `_rows` stay, as for the other inputs;
  - `in2_e2e_pasteback_*`: the kit's own `_rows`, `_rows_step`, `_sha256` and `_shape` only;
  - uint8 images of 10,000+ values (the 192, 224 and 256 crops, the 16-row samples): stored as
    lossless PNG bytes under `<name>.png` (kit names have no dot), about 20% smaller than deflated
    raw bytes; face_kit() decodes them back to the kit's arrays, and this script checks that.
  `inN_e2e_image512_png` and `in1_e2e_pasteback_png` stay whole, bytes untouched (2.06 MB of the
  total: they do not compress further).
* `face_kit/coffee.png`: skimage's coffee() as lossless PNG (tests/data/coffee.jpg is lossy), for
  rebuilding `in2`.

It then rebuilds the four inputs with tests.data.face_kit.face_input, which checks each against
the kit's `inN_input_sha256`.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "face_kit"
PNG_MIN_VALUES = 10_000


def keep_whole(name: str) -> bool:
    return not name.endswith("_crop_img512_png")


def as_png(image: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def packed(kit: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The carried arrays: kit arrays as they are, or large uint8 images as `<name>.png`."""
    out: dict[str, np.ndarray] = {}
    for name, value in kit.items():
        if not keep_whole(name):
            continue
        is_image = value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3
        if is_image and value.size >= PNG_MIN_VALUES:
            out[f"{name}.png"] = as_png(value)
        else:
            out[name] = value
    return out


def main(kit_dir: Path, skimage_dir: Path) -> None:
    with np.load(kit_dir / "face_vectors_seed0.npz") as data:
        kit = {name: data[name] for name in data.files}
    OUT.mkdir(exist_ok=True)
    np.savez_compressed(OUT / "vectors_seed0.npz", **packed(kit))
    with Image.open(skimage_dir / "coffee.png") as img:
        img.convert("RGB").save(OUT / "coffee.png", optimize=True)

    sys.path.insert(0, str(HERE.parent.parent))
    from tests.data.face_kit import face_input, face_kit

    face_kit.cache_clear()
    carried = face_kit()
    for name, value in kit.items():
        if keep_whole(name):
            assert value.dtype == carried[name].dtype and np.array_equal(value, carried[name]), name
    for name in ("in1", "in2", "in3", "in4"):
        face_input(name)
    sizes = {path.name: path.stat().st_size for path in sorted(OUT.iterdir()) if path.is_file()}
    print(sizes, "total", sum(sizes.values()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
