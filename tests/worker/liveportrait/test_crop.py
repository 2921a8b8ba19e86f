"""Crop geometry against the conformance kit's official vectors (liveportrait-spec.md §4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from worker.liveportrait.crop import (
    crop_transform,
    limit_input,
    network_input,
    pt2_from_landmarks,
    warp_crop,
    whole_image_input,
)


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


def _centre(m_c2o: np.ndarray, dsize: int) -> np.ndarray:
    return (m_c2o @ np.array([dsize / 2, dsize / 2, 1.0]))[:2]


def _upright_face68() -> np.ndarray:
    """A plausible upright 68-point face: jaw arc, brows, nose, eyes, lips."""
    pts = np.zeros((68, 2))
    t = np.linspace(np.pi, 0, 17)
    pts[0:17] = np.stack([200 + 80 * np.cos(t), 200 + 100 * np.sin(t)], axis=1)  # jaw, ear to ear
    pts[17:22] = np.stack([np.linspace(140, 190, 5), np.full(5, 160.0)], axis=1)
    pts[22:27] = np.stack([np.linspace(210, 260, 5), np.full(5, 160.0)], axis=1)
    pts[27:36] = np.stack([np.full(9, 200.0), np.linspace(180, 240, 9)], axis=1)
    pts[36:42] = np.stack([np.linspace(150, 185, 6), np.full(6, 185.0)], axis=1)
    pts[42:48] = np.stack([np.linspace(215, 250, 6), np.full(6, 185.0)], axis=1)
    pts[48:60] = np.stack([np.linspace(170, 230, 12), np.full(12, 260.0)], axis=1)
    pts[60:68] = np.stack([np.linspace(180, 220, 8), np.full(8, 262.0)], axis=1)
    # Symmetric eye and mouth corners, so the eye→mouth axis is exactly vertical.
    pts[36], pts[39], pts[42], pts[45] = (150.0, 185.0), (185.0, 185.0), (215.0, 185.0), (250.0, 185.0)
    pts[48], pts[54] = (170.0, 260.0), (230.0, 260.0)
    return pts


# ---------------------------------------------------------------------------------------------
# against the kit


def test_pt2_from_kit_pt5(kit: dict[str, np.ndarray]) -> None:
    pt2 = pt2_from_landmarks(kit["crop_pt5"])
    assert pt2.shape == (2, 2)
    np.testing.assert_allclose(pt2, kit["crop_pt2"], atol=1e-6)


def test_crop_matrices_match_official(kit: dict[str, np.ndarray]) -> None:
    m_o2c, m_c2o = crop_transform(
        kit["crop_pt5"], dsize=512, scale=2.3, vx_ratio=0.0, vy_ratio=-0.125, flag_do_rot=True
    )
    assert m_o2c.shape == m_c2o.shape == (3, 3)
    assert m_o2c.dtype == m_c2o.dtype == np.float64
    assert _rel_err(m_o2c, kit["crop_M_o2c"]) < 1e-4
    assert _rel_err(m_c2o, kit["crop_M_c2o"]) < 1e-4


def test_defaults_are_the_official_crop(kit: dict[str, np.ndarray]) -> None:
    m_o2c, _ = crop_transform(kit["crop_pt5"])
    assert _rel_err(m_o2c, kit["crop_M_o2c"]) < 1e-4


def test_crop_without_rotation_matches_official(kit: dict[str, np.ndarray]) -> None:
    m_o2c, _ = crop_transform(kit["crop_pt5"], dsize=512, scale=2.0, vy_ratio=0.0, flag_do_rot=False)
    assert _rel_err(m_o2c, kit["crop_norot_scale2_vy0_M_o2c"]) < 1e-4


def test_crop_step_matches_official_opencv_410(kit: dict[str, np.ndarray]) -> None:
    # The kit's own matrix through our warp: exactly OpenCV 4.10's crop (the official pin).
    crop = warp_crop(kit["source_image"], kit["crop_M_o2c"], 512)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, kit["crop_img512_cv410"])


def test_crop_matrix_is_the_kits_within_one_float32_step(kit: dict[str, np.ndarray]) -> None:
    # The kit computed its matrix in numpy 2's float32 scalar arithmetic; crop_transform follows the
    # official pin (numpy 1.x, entries widened to float64 and rounded, as the face kit confirms bit
    # for bit). On these landmarks that moves one translation entry by one float32 step.
    m_o2c, m_c2o = crop_transform(kit["crop_pt5"])
    np.testing.assert_array_max_ulp(m_o2c.astype(np.float32), kit["crop_M_o2c"], maxulp=1)
    np.testing.assert_array_max_ulp(m_c2o.astype(np.float32), kit["crop_M_c2o"], maxulp=2)


def test_full_chain_to_the_512_crop(kit: dict[str, np.ndarray]) -> None:
    m_o2c, _ = crop_transform(kit["crop_pt5"])
    crop = warp_crop(kit["source_image"], m_o2c, 512)
    diff = np.abs(crop.astype(np.int16) - kit["crop_img512_cv410"].astype(np.int16))
    # That 1.5e-5 px step crosses OpenCV 4.x's 1/32-pixel sample grid at a few places: those samples
    # move by one grid step (at most 255/32 grey levels); everything else is exact.
    assert diff.max() <= 8
    assert np.count_nonzero(diff) < 1e-4 * diff.size


def test_network_input_matches_official(kit: dict[str, np.ndarray]) -> None:
    x = network_input(kit["crop_img512_cv410"])
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32 and x.flags.c_contiguous
    # The 256 crop itself: exact area resampling, channels kept in RGB order, then / 255.
    crop256 = kit["input_crop256_cv410"]
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), crop256 / np.float32(255))
    np.testing.assert_array_equal(np.rint(x[0].transpose(1, 2, 0) * 255).astype(np.uint8), crop256)


def test_network_arrays_keep_the_kits_input_tensor(kit: dict[str, np.ndarray]) -> None:
    # The kit's network vectors were computed from its (OpenCV 5.x) input_tensor, carried as
    # input_crop256; it is a different crop from the 4.10 one, close to it.
    assert kit["input_tensor"].shape == (1, 3, 256, 256)
    np.testing.assert_array_equal(
        kit["input_tensor"][0].transpose(1, 2, 0), kit["input_crop256"] / np.float32(255)
    )
    diff = np.abs(kit["input_crop256"].astype(np.int16) - kit["input_crop256_cv410"].astype(np.int16))
    assert 0 < diff.max() <= 4


def test_full_chain_to_network_input(kit: dict[str, np.ndarray]) -> None:
    m_o2c, _ = crop_transform(kit["crop_pt5"])
    x = network_input(warp_crop(kit["source_image"], m_o2c, 512))
    expected = kit["input_crop256_cv410"] / np.float32(255)
    assert float(np.abs(x[0].transpose(1, 2, 0) - expected).max()) <= 1 / 255 + 1e-6


def test_vx_ratio_is_honoured(kit: dict[str, np.ndarray]) -> None:
    pts = kit["crop_pt5"].astype(np.float64)
    dsize = 512
    m0_o2c, m0_c2o = crop_transform(pts, vx_ratio=0.0)
    assert _rel_err(m0_o2c, kit["crop_M_o2c"]) < 1e-4

    pt2 = kit["crop_pt2"].astype(np.float64)
    uy = (pt2[1] - pt2[0]) / np.linalg.norm(pt2[1] - pt2[0])
    ux = np.array([uy[1], -uy[0]])
    side = dsize / np.hypot(m0_o2c[0, 0], m0_o2c[0, 1])  # S = dsize / s
    for vx in (0.2, -0.15):
        m_o2c, m_c2o = crop_transform(pts, vx_ratio=vx)
        np.testing.assert_allclose(m_o2c[:2, :2], m0_o2c[:2, :2], rtol=1e-12)  # same scale/rotation
        shift = _centre(m_c2o, dsize) - _centre(m0_c2o, dsize)
        # float32 matrices (the official arithmetic): the centre is good to a few 1e-5 px.
        np.testing.assert_allclose(shift, ux * vx * side, atol=1e-4)


def test_inverse_pair() -> None:
    pts = _upright_face68() @ np.array([[0.9, 0.3], [-0.3, 0.9]]) + 37.0
    for rot in (True, False):
        m_o2c, m_c2o = crop_transform(pts, dsize=384, scale=2.5, vx_ratio=0.1, flag_do_rot=rot)
        np.testing.assert_allclose(m_c2o @ m_o2c, np.eye(3), atol=1e-5)  # a float32 inverse
        np.testing.assert_allclose(m_o2c[2], [0, 0, 1])


# ---------------------------------------------------------------------------------------------
# geometry on synthetic landmarks


def test_upright_face_box_and_vy_shift() -> None:
    pts = _upright_face68()
    dsize, scale, vy = 512, 2.3, -0.125
    m_o2c, m_c2o = crop_transform(pts, dsize=dsize, scale=scale, vy_ratio=vy)
    # Upright face: no rotation terms, isotropic scale dsize / (scale * max extent).
    assert abs(m_o2c[0, 1]) < 1e-12 and abs(m_o2c[1, 0]) < 1e-12
    extent = max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]))
    side = scale * extent
    np.testing.assert_allclose(m_o2c[0, 0], dsize / side)
    np.testing.assert_allclose(m_o2c[1, 1], dsize / side)
    # Centre: middle of the landmark box, moved 0.125*S towards the forehead (-y).
    box_mid = (pts.min(axis=0) + pts.max(axis=0)) / 2
    np.testing.assert_allclose(_centre(m_c2o, dsize), box_mid + np.array([0.0, vy * side]), atol=1e-9)


@pytest.mark.parametrize("angle_deg", [20.0, -35.0])
def test_rotated_face_is_cropped_upright(angle_deg: float) -> None:
    pts = _upright_face68()
    pivot = np.array([320.0, 240.0])
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    turned = (pts - pivot) @ rot.T + pivot
    m_up, _ = crop_transform(pts)
    m_turned, _ = crop_transform(turned)

    def apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
        return p @ m[:2, :2].T + m[:2, 2]

    # Rotating the face in the image must not change where its points land in the crop (up to the
    # float32 arithmetic of the official matrices).
    np.testing.assert_allclose(apply(m_turned, turned), apply(m_up, pts), atol=1e-3)
    # Without rotation the crop keeps the roll but not the centre/size: same scale, no off-diagonals.
    m_norot, _ = crop_transform(turned, flag_do_rot=False)
    assert m_norot[0, 1] == 0 and m_norot[1, 0] == 0
    np.testing.assert_allclose(m_norot[0, 0], np.hypot(m_turned[0, 0], m_turned[0, 1]))


def test_68_point_rule() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 500, (68, 2))
    pts[36], pts[39] = (100.0, 200.0), (140.0, 204.0)
    pts[42], pts[45] = (180.0, 206.0), (220.0, 210.0)
    pts[48], pts[54] = (130.0, 300.0), (190.0, 296.0)
    expected = np.array([[(120 + 200) / 2, (202 + 208) / 2], [160.0, 298.0]])
    np.testing.assert_allclose(pt2_from_landmarks(pts), expected)
    # Lid and lip midpoints do not take part in the 68-point rule.
    moved = pts.copy()
    moved[[37, 38, 40, 41, 43, 44, 46, 47, 51, 57, 62, 66]] += 50.0
    np.testing.assert_allclose(pt2_from_landmarks(moved), expected)


@pytest.mark.parametrize(
    ("count", "left", "right", "mouth"),
    [
        (5, [0], [1], [3, 4]),
        (68, [36, 39], [42, 45], [48, 54]),
        (101, [39, 42, 45, 48], [51, 54, 57, 60], [75, 81]),
        (106, [33, 35, 40, 39], [87, 89, 94, 93], [52, 61]),
        (203, [0, 6, 12, 18], [24, 30, 36, 42], [48, 66]),
    ],
)
def test_rule_per_point_count(count: int, left: list[int], right: list[int], mouth: list[int]) -> None:
    rng = np.random.default_rng(count)
    pts = rng.uniform(0, 1000, (count, 2))
    eye = (pts[left].mean(axis=0) + pts[right].mean(axis=0)) / 2
    np.testing.assert_allclose(pt2_from_landmarks(pts), np.stack([eye, pts[mouth].mean(axis=0)]))


@pytest.mark.parametrize("count", [4, 21, 98, 468, 478])
def test_unknown_point_counts_are_refused(count: int) -> None:
    with pytest.raises(ValueError, match="landmark count"):
        pt2_from_landmarks(np.ones((count, 2)))


def test_bad_landmarks_are_refused() -> None:
    with pytest.raises(ValueError):
        pt2_from_landmarks(np.ones((68, 3)))
    nan = _upright_face68()
    nan[10, 0] = np.nan
    with pytest.raises(ValueError):
        crop_transform(nan)
    with pytest.raises(ValueError):
        crop_transform(np.full((68, 2), 5.0))  # zero extent


def test_input_limit_is_the_official_loaders() -> None:
    # resize_to_limit(max_dim=1280, division=2): long side to 1280, the other truncated, then even.
    rgb = np.random.default_rng(0).integers(0, 256, (1999, 3001, 3), dtype=np.uint8)
    limited, to_input = limit_input(rgb)
    assert limited.shape == (852, 1280, 3)  # int(1999 * 1280 / 3001) = 852, already even
    expected = cv2.resize(rgb, (1280, 852))
    np.testing.assert_array_equal(limited, expected)
    # Pixel centres map back with cv2's convention.
    np.testing.assert_allclose(to_input @ [0, 0, 1], [3001 / 1280 / 2 - 0.5, 1999 / 852 / 2 - 0.5, 1])
    odd = np.zeros((301, 511, 3), np.uint8)
    small, to_small = limit_input(odd)
    assert small.shape == (300, 510, 3) and np.array_equal(to_small, np.eye(3))
    same, _ = limit_input(np.zeros((1280, 720, 3), np.uint8))
    assert same.shape == (1280, 720, 3)


def test_whole_image_input_is_a_bilinear_resize() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    x = whole_image_input(rgb)
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    expected = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), expected)
    crop = rgb[:256, :256]
    np.testing.assert_array_equal(whole_image_input(crop)[0].transpose(1, 2, 0), crop / np.float32(255))


def test_warp_crop_border_is_black() -> None:
    img = np.full((100, 120, 3), 200, np.uint8)
    m = np.array([[1.0, 0, 60.0], [0, 1.0, 0.0], [0, 0, 1]])  # image lands 60 px to the right
    crop = warp_crop(img, m, 128)
    assert crop.shape == (128, 128, 3)
    assert (crop[:50, :55] == 0).all() and (crop[:50, 65:] == 200).all() and (crop[110:] == 0).all()


def test_network_input_resizes_other_sizes_and_keeps_rgb() -> None:
    crop = np.zeros((384, 384, 3), np.uint8)
    crop[..., 0] = 255  # red
    crop[:, :192, 2] = 51  # blue on the left half
    x = network_input(crop)
    assert x.shape == (1, 3, 256, 256)
    assert (x[0, 0] == 1.0).all() and (x[0, 1] == 0.0).all()
    np.testing.assert_allclose(x[0, 2, :, :120], 0.2, atol=1e-6)
    assert (x[0, 2, :, 130:] == 0.0).all()


def test_network_input_uses_area_resampling() -> None:
    # 384 → 256 is a 1.5x shrink, where area and bilinear resampling differ. Area weights per
    # output pair: (1, 0.5) and (0.5, 1) over each three input pixels, divided by 1.5.
    rng = np.random.default_rng(6)
    crop = rng.integers(0, 256, (384, 384, 3), dtype=np.uint8)
    a = np.zeros((256, 384))
    for j in range(128):
        a[2 * j, 3 * j : 3 * j + 2] = (1.0, 0.5)
        a[2 * j + 1, 3 * j + 1 : 3 * j + 3] = (0.5, 1.0)
    a /= 1.5
    rows = np.tensordot(a, crop.astype(np.float64), axes=(1, 0))  # (256, 384, 3)
    expected = np.tensordot(rows, a, axes=(1, 1)).transpose(1, 0, 2) / 255.0  # (3, 256, 256)
    x = network_input(crop)[0]
    assert float(np.abs(x - expected).max()) <= 0.5 / 255 + 1e-4
