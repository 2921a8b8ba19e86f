"""The expression editor's formula table (spec §8.2) control by control, and the rotation convention.

The kit's four edits exercise most controls together; these tests pin each coefficient, sign and
axis separately, including the branches the kit does not reach (negative pupil_x and eyebrow,
pupil_y's coupling into blink).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.liveportrait import keypoints as kp

X, Y, Z = 0, 1, 2

# control, value, {(kp, axis): coefficient per unit}, (pitch, yaw, roll) per unit
TABLE = [
    ("smile", 1.0, {(20, Y): -0.01, (14, Y): -0.02, (17, Y): 0.0065, (17, Z): 0.003, (13, Y): -0.00275,
                    (16, Y): -0.00275, (3, Y): -0.0035, (7, Y): -0.0035}, (0, 0, 0)),
    ("aaa", 30.0, {(19, Y): 0.001, (19, Z): 0.0001, (17, Y): -0.0001}, (-0.05, 0, 0)),
    ("eee", -7.0, {(20, Z): -0.001, (20, Y): -0.001, (14, Y): -0.001}, (0, 0, 0)),
    ("woo", 9.0, {(14, Y): 0.001, (3, Y): -0.0005, (7, Y): -0.0005, (17, Z): -0.0005}, (0, 0, 0)),
    ("wink", 12.0, {(11, Y): 0.001, (13, Y): -0.0003, (17, X): 0.0003, (17, Y): 0.0003, (3, Y): -0.0003},
     (0, -0.1, -0.1)),
    ("pupil_x", 8.0, {(11, X): 0.0007, (15, X): 0.001}, (0, 0, 0)),
    ("pupil_x", -8.0, {(11, X): 0.001, (15, X): 0.0007}, (0, 0, 0)),
    ("blink", -12.0, {(11, Y): -0.001, (13, Y): 0.0003, (15, Y): -0.001, (16, Y): 0.0003, (1, Y): -0.00025,
                      (2, Y): 0.00025}, (0, 0, 0)),
    ("eyebrow", 6.0, {(1, Y): 0.001, (2, Y): -0.001}, (0, 0, 0)),
    ("eyebrow", -6.0, {(1, X): -0.001, (2, X): 0.001, (1, Y): 0.0003, (2, Y): -0.0003}, (0, 0, 0)),
    ("rotate_pitch", 7.0, {}, (1, 0, 0)),
    ("rotate_yaw", 7.0, {}, (0, -1, 0)),
    ("rotate_roll", 7.0, {}, (0, 0, 1)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "coefs", "pose"), TABLE, ids=[f"{t[0]}={t[1]}" for t in TABLE])
def test_each_control(name: str, value: float, coefs: dict, pose: tuple) -> None:
    delta, rot = kp.expression_deltas({name: value})
    expected = np.zeros((1, 21, 3), dtype=np.float32)
    for (k, axis), coef in coefs.items():
        expected[0, k, axis] += coef * value
    np.testing.assert_allclose(delta.numpy(), expected, atol=1e-9, rtol=0)
    np.testing.assert_allclose(rot, np.array(pose) * value, atol=1e-9)


def test_pupil_y_moves_pupils_and_drives_blink() -> None:
    value = 10.0
    delta, _ = kp.expression_deltas({"pupil_y": value})
    blink = -value / 2  # the editor's implicit blink
    expected = np.zeros((1, 21, 3), dtype=np.float32)
    expected[0, 11, Y] = -0.001 * value - 0.001 * blink
    expected[0, 15, Y] = -0.001 * value - 0.001 * blink
    expected[0, 13, Y] = 0.0003 * blink
    expected[0, 16, Y] = 0.0003 * blink
    expected[0, 1, Y] = -0.00025 * blink
    expected[0, 2, Y] = 0.00025 * blink
    np.testing.assert_allclose(delta.numpy(), expected, atol=1e-9)


def test_controls_add_up() -> None:
    parts = [
        kp.expression_deltas({"smile": 0.5}),
        kp.expression_deltas({"wink": 5}),
        kp.expression_deltas({"aaa": 20}),
    ]
    delta, rot = kp.expression_deltas({"smile": 0.5, "wink": 5, "aaa": 20})
    np.testing.assert_allclose(delta.numpy(), sum(p[0].numpy() for p in parts), atol=1e-8)
    np.testing.assert_allclose(rot, np.sum([p[1] for p in parts], axis=0), atol=1e-9)


def rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_rotation_matrix_is_transpose_of_rz_ry_rx() -> None:
    pitch, yaw, roll = 12.0, -25.0, 7.5
    got = (
        kp.rotation_matrix(torch.tensor([pitch]), torch.tensor([yaw]), torch.tensor([roll]))[0]
        .double()
        .numpy()
    )
    expected = (rot("z", roll) @ rot("y", yaw) @ rot("x", pitch)).T
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_bins_to_degrees() -> None:
    logits = torch.full((1, 66), -1e4)
    logits[0, 40] = 0.0  # all mass on bin 40
    assert kp.bins_to_degrees(logits).item() == pytest.approx(40 * 3 - 97.5)
    assert kp.bins_to_degrees(torch.zeros(1, 66)).item() == pytest.approx(0.0)  # uniform: centre


def test_stitch_adds_shared_xy_shift() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 65)
            out[0, 3 * 4 + 2] = 0.5  # kp 4, z
            out[0, 63], out[0, 64] = 0.1, -0.2
            return out

    x = torch.zeros(1, 21, 3)
    got = kp.stitch(Fixed(), x, x)
    assert got[0, 4, 2].item() == pytest.approx(0.5)
    assert torch.allclose(got[0, :, 0], torch.full((21,), 0.1))
    assert torch.allclose(got[0, :, 1], torch.full((21,), -0.2))
