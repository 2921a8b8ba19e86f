"""Paste-back and the mask template against the conformance kit (liveportrait-spec.md §5)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.data import KIT_DIR
from worker.liveportrait.crop import crop_transform
from worker.liveportrait.pasteback import mask_template, paste_back, resize_crop

MASK_PNG = KIT_DIR / "mask_template.png"
RED = np.array([255, 0, 0], np.uint8)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


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


def test_paste_back_matches_official(kit: dict[str, np.ndarray]) -> None:
    out = paste_back(kit["edit1_image_u8"], kit["crop_M_c2o"], kit["source_image"], crop_size=512)
    assert out.shape == kit["source_image"].shape and out.dtype == np.uint8
    assert _max_diff(out, kit["pasteback_image"]) <= 1


def test_paste_back_with_own_crop_matrix(kit: dict[str, np.ndarray]) -> None:
    _, m_c2o = crop_transform(kit["crop_pt5"])
    out = paste_back(kit["edit1_image_u8"], m_c2o, kit["source_image"], crop_size=512)
    assert _max_diff(out, kit["pasteback_image"]) <= 1


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
