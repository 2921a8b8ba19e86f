"""Paste-back and the mask template against the conformance kit (liveportrait-spec.md §5)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from tests.data import KIT_DIR
from tests.data.face_kit import decode_png, face_kit, limited
from worker.liveportrait.crop import crop_transform
from worker.liveportrait.pasteback import mask_template, paste_back, resize_crop

MASK_PNG = KIT_DIR / "mask_template.png"
RED = np.array([255, 0, 0], np.uint8)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _official(crop: np.ndarray, m_c2o: np.ndarray, original: np.ndarray, crop_size: int) -> np.ndarray:
    """The official paste-back: both warps over the whole frame, then the float32 blend everywhere."""
    n = crop.shape[0]
    m = (m_c2o @ np.diag([crop_size / n, crop_size / n, 1.0]))[:2]
    size = (original.shape[1], original.shape[0])
    mask = cv2.warpAffine(np.asarray(mask_template(n)), m, size, flags=cv2.INTER_LINEAR)
    face = cv2.warpAffine(crop, m, size, flags=cv2.INTER_LINEAR)
    alpha = mask.astype(np.float32) / 255.0
    return np.clip(alpha * face + (1 - alpha) * original, 0, 255).astype(np.uint8)


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A crop, a matrix and a frame: any scale from 1/50 to 8, any angle, some with shear or a
    mirror, some with quarter-pixel steps; the crop anywhere from wholly outside to wholly inside."""
    height, width = (int(v) for v in rng.integers(40, 700, 2))
    original = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    n = int(rng.choice([512, 256, 64]))
    crop = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    if rng.random() < 0.5:
        crop = cv2.GaussianBlur(crop, (0, 0), 1.0)
    scale = float(np.exp(rng.uniform(np.log(0.02), np.log(8.0))))
    angle = rng.uniform(-np.pi, np.pi)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if rng.random() < 0.3:
        linear = linear @ np.array([[1.0, rng.uniform(-0.5, 0.5)], [0.0, rng.uniform(0.5, 1.5)]])
    if rng.random() < 0.2:
        linear = linear @ np.diag([-1.0, 1.0])
    if rng.random() < 0.1 and scale > 0.5:
        linear = np.round(linear * 4) / 4
    m_c2o = np.eye(3)
    m_c2o[:2, :2] = linear
    m_c2o[:2, 2] = rng.uniform(-scale * n, [width, height])
    return crop, m_c2o, original, int(rng.choice([512, 256, 300]))


def test_mask_template_equals_official_png() -> None:
    official = cv2.imread(str(MASK_PNG), cv2.IMREAD_COLOR)
    mask = mask_template()
    assert mask.shape == (512, 512, 3) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, official)


def test_mask_template_geometry() -> None:
    mask = mask_template()[..., 0]
    assert (mask[16:497, 16:497] == 255).all()
    # The inner square is [16, 496], not centred: 0 at the left/top edge, 15 at the right/bottom.
    assert mask[256, 0] == 0 and mask[0, 256] == 0
    assert mask[256, 511] == 15 and mask[511, 256] == 15
    assert mask[256, 8] == 127  # floor(255 * (1 - 8/16))
    assert mask[8, 8] == int(255 * (1 - np.hypot(8, 8) / 16))  # round corners
    assert not mask_template().flags.writeable  # shared cached array


def test_mask_template_other_sizes() -> None:
    small = mask_template(256)
    assert small.shape == (256, 256, 3)
    assert (small[16:240, 16:240] == 255).all() and (small[128, 0] < 20).all()
    assert mask_template(256) is small  # cached


@pytest.mark.parametrize("name", ["in1", "in2"])
def test_paste_back_equals_official_byte_for_byte(name: str) -> None:
    # The face kit's default-request paste-backs, made by the official code with OpenCV 4.10 on
    # the limited input; in2 is 640x900 with the crop off-centre. The crop matrix is ours.
    kit = face_kit()
    _, m_c2o = crop_transform(kit[f"{name}_lmk106"])
    np.testing.assert_array_equal(m_c2o, kit[f"{name}_crop_M_c2o"])
    image512 = decode_png(kit[f"{name}_e2e_image512_png"])
    out = paste_back(image512, m_c2o, limited(name), crop_size=512)
    assert out.shape == tuple(kit[f"{name}_e2e_pasteback_shape"]) and out.dtype == np.uint8
    assert hashlib.sha256(out.tobytes()).hexdigest() == str(kit[f"{name}_e2e_pasteback_sha256"])
    if name == "in1":
        np.testing.assert_array_equal(out, decode_png(kit["in1_e2e_pasteback_png"]))


def test_paste_back_near_the_liveportrait_kit(kit: dict[str, np.ndarray]) -> None:
    # That kit's pasteback_image came from the same OpenCV 5.x run as its crop_img512 (its README,
    # "OpenCV version"): 5.x samples off 4.x's 1/32-pixel grid, which puts it up to 4 levels from
    # the official 4.x warp, as it does its crop. The byte-exact checks are the face kit's, above.
    out = paste_back(kit["edit1_image_u8"], kit["crop_M_c2o"], kit["source_image"], crop_size=512)
    assert out.shape == kit["source_image"].shape and out.dtype == np.uint8
    assert _max_diff(out, kit["pasteback_image"]) <= 4


def test_paste_back_blend_formula() -> None:
    # One grey crop over one grey image: every output pixel is trunc(m*200 + (1-m)*40) with the
    # mask value m that lands there; with an identity transform that is the template itself.
    crop = np.full((512, 512, 3), 200, np.uint8)
    original = np.full((512, 512, 3), 40, np.uint8)
    out = paste_back(crop, np.eye(3), original, crop_size=512)
    m = mask_template().astype(np.float32) / np.float32(255.0)
    expected = (m * np.float32(200) + (np.float32(1) - m) * np.float32(40)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_output_has_input_resolution_non_square() -> None:
    rng = np.random.default_rng(3)
    original = rng.integers(0, 256, (300, 700, 3), dtype=np.uint8)
    crop = np.broadcast_to(RED, (512, 512, 3)).copy()
    # The 512 crop shrunk to 128 px and placed with its corner at (400, 100).
    m_c2o = _translation(400, 100) @ np.diag([0.25, 0.25, 1.0])
    out = paste_back(crop, m_c2o, original, crop_size=512)
    assert out.shape == (300, 700, 3) and out.dtype == np.uint8
    assert (out[110:220, 410:520] == RED).all()
    # Far from the crop the input is untouched, bit for bit.
    np.testing.assert_array_equal(out[:, :395], original[:, :395])
    np.testing.assert_array_equal(out[:95], original[:95])
    np.testing.assert_array_equal(out[235:], original[235:])
    np.testing.assert_array_equal(out[:, 535:], original[:, 535:])
    assert not np.shares_memory(out, original)


def test_crop_size_other_than_512_is_composed() -> None:
    original = np.full((600, 600, 3), 30, np.uint8)
    crop = np.broadcast_to(RED, (512, 512, 3)).copy()
    # M_c2o for a 256-px crop whose origin sits at (100, 50) in the original.
    out = paste_back(crop, _translation(100, 50), original, crop_size=256)
    red = np.all(out == RED, axis=2)
    ys, xs = np.nonzero(red)
    # Full mask inside the 256 crop's inner square [8, 248] → original [108, 348] x [58, 298].
    assert xs.min() in range(106, 111) and xs.max() in range(346, 351)
    assert ys.min() in range(56, 61) and ys.max() in range(296, 301)
    untouched = np.all(out == 30, axis=2)
    assert untouched[:, :99].all() and untouched[:, 358:].all()
    assert untouched[:49].all() and untouched[308:].all()


def test_scaled_crop_size_places_crop_like_official_scale() -> None:
    # A 1024 crop mapped with M_c2o must equal a 512 crop mapped with M_c2o·diag(2, 2).
    rng = np.random.default_rng(4)
    original = rng.integers(0, 256, (400, 500, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    m_c2o = _translation(40, 20) @ np.diag([0.3, 0.3, 1.0])
    a = paste_back(crop, m_c2o, original, crop_size=1024)
    b = paste_back(crop, m_c2o @ np.diag([2.0, 2.0, 1.0]), original, crop_size=512)
    np.testing.assert_array_equal(a, b)


def test_crop_outside_the_image_changes_nothing() -> None:
    original = np.full((100, 100, 3), 77, np.uint8)
    crop = np.broadcast_to(RED, (512, 512, 3)).copy()
    out = paste_back(crop, _translation(5000, -5000), original, crop_size=512)
    np.testing.assert_array_equal(out, original)


def test_equals_the_full_frame_warp_and_blend_byte_for_byte() -> None:
    # Only the crop's rows (from column 0) are warped, only the mask's soft band is blended in
    # floats: none of it may move a single value against the official full-frame formula.
    rng = np.random.default_rng(12)
    for _ in range(150):
        crop, m_c2o, original, crop_size = _random_case(rng)
        before = original.copy()
        out = paste_back(crop, m_c2o, original, crop_size=crop_size)
        np.testing.assert_array_equal(out, _official(crop, m_c2o, original, crop_size))
        np.testing.assert_array_equal(original, before)


def test_kit_paste_back_equals_the_full_frame_formula(kit: dict[str, np.ndarray]) -> None:
    args = (kit["edit1_image_u8"], kit["crop_M_c2o"], kit["source_image"])
    np.testing.assert_array_equal(paste_back(*args, crop_size=512), _official(*args, 512))


@pytest.mark.parametrize(
    "corner",
    [(-300.0, -200.0), (450.0, -250.0), (-250.0, 300.0), (500.0, 380.0), (-100.0, 100.0)],
    ids=["top-left", "top-right", "bottom-left", "bottom-right", "left"],
)
def test_crop_partly_outside_the_frame(corner: tuple[float, float]) -> None:
    rng = np.random.default_rng(6)
    original = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    rotation = cv2.getRotationMatrix2D((0.0, 0.0), 20.0, 0.8)
    m_c2o = _translation(*corner) @ np.vstack([rotation, [0.0, 0.0, 1.0]])
    out = paste_back(crop, m_c2o, original, crop_size=512)
    assert out.shape == original.shape
    np.testing.assert_array_equal(out, _official(crop, m_c2o, original, 512))
    assert not np.array_equal(out, original)


def test_crop_larger_than_the_frame() -> None:
    # The frame lies wholly inside the crop's opaque square: every pixel is the face's.
    original = np.full((60, 80, 3), 9, np.uint8)
    crop = np.broadcast_to(RED, (512, 512, 3)).copy()
    out = paste_back(crop, _translation(-100, -100), original, crop_size=512)
    assert (out == RED).all()


def test_in_place_writes_into_the_original() -> None:
    rng = np.random.default_rng(8)
    original = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    m_c2o = _translation(50, 20) @ np.diag([0.4, 0.4, 1.0])
    expected = paste_back(crop, m_c2o, original, crop_size=512)
    out = paste_back(crop, m_c2o, original, crop_size=512, in_place=True)
    assert out is original
    np.testing.assert_array_equal(out, expected)
    # A view that is not C-contiguous is not written: the result is a new array.
    wide = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    view = wide[:, 50:450]
    before = view.copy()
    out = paste_back(crop, m_c2o, view, crop_size=512, in_place=True)
    assert not np.shares_memory(out, wide)
    np.testing.assert_array_equal(view, before)
    np.testing.assert_array_equal(out, paste_back(crop, m_c2o, before, crop_size=512))
    # Nor is a read-only array (decode_image's, over Pillow's bytes).
    frozen = original.copy()
    frozen.setflags(write=False)
    out = paste_back(crop, m_c2o, frozen, crop_size=512, in_place=True)
    assert out is not frozen and not np.shares_memory(out, frozen)


def test_paste_back_rejects_bad_inputs() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError):
        paste_back(np.zeros((512, 512, 3), np.float32), np.eye(3), img, crop_size=512)
    with pytest.raises(ValueError):
        paste_back(np.zeros((512, 256, 3), np.uint8), np.eye(3), img, crop_size=512)
    with pytest.raises(ValueError):
        paste_back(np.zeros((512, 512, 3), np.uint8), np.eye(3), img, crop_size=0)


def test_resize_crop() -> None:
    rng = np.random.default_rng(5)
    crop = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    same = resize_crop(crop, 512)
    np.testing.assert_array_equal(same, crop)
    assert not np.shares_memory(same, crop)
    small = resize_crop(crop, 256)
    assert small.shape == (256, 256, 3) and small.dtype == np.uint8
    # Shrinking by 2 is an exact 2x2 box average (area interpolation).
    box = crop.reshape(256, 2, 256, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(small - box).max() <= 0.5 + 1e-9
    big = resize_crop(np.broadcast_to(RED, (512, 512, 3)).copy(), 1000)
    assert big.shape == (1000, 1000, 3) and (big == RED).all()
