"""Keypoint maths: head pose from bins, rotations, source/driving keypoints, the expression editor.

Conventions (those of the official code): keypoints are row vectors multiplied on the right by
`rotation_matrix(...)`, which returns R^T with R = Rz(roll) Ry(yaw) Rx(pitch); axes are
x right, y down, z into the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.edit_params import EXPRESSION_FIELDS


@dataclass
class SourceMotion:
    """The motion extractor's output for one image, pose in degrees, kp/exp as (B,K,3)."""

    pitch: torch.Tensor  # (B,1)
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor  # (B,3)
    exp: torch.Tensor  # (B,K,3)
    scale: torch.Tensor  # (B,1)
    kp: torch.Tensor  # (B,K,3)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected bin index of the softmax, 3 degrees a bin, centred: (B,66) -> (B,1)."""
    idx = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    probs = torch.softmax(logits, dim=1)
    return ((probs * idx).sum(dim=1) * 3 - 97.5).unsqueeze(1)


def source_motion(raw: dict[str, torch.Tensor]) -> SourceMotion:
    b = raw["kp"].shape[0]
    return SourceMotion(
        pitch=bins_to_degrees(raw["pitch"]),
        yaw=bins_to_degrees(raw["yaw"]),
        roll=bins_to_degrees(raw["roll"]),
        t=raw["t"],
        exp=raw["exp"].reshape(b, -1, 3),
        scale=raw["scale"],
        kp=raw["kp"].reshape(b, -1, 3),
    )


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) or (B,1) -> (B,3,3), the transpose of Rz @ Ry @ Rx."""
    x, y, z = (torch.deg2rad(a.reshape(-1)) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).view(-1, 3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def source_keypoints(m: SourceMotion) -> torch.Tensor:
    """x_s = scale * (kp R^T + exp) + (tx, ty, 0): t_z is dropped for the source."""
    rot = rotation_matrix(m.pitch, m.yaw, m.roll)
    x = (m.kp @ rot + m.exp) * m.scale.view(-1, 1, 1)
    return torch.cat([x[..., :2] + m.t[:, None, :2], x[..., 2:]], dim=-1)


# Expression editor: (keypoint, axis, coefficient) per control; axis 0=x, 1=y, 2=z.
_SMILE = ((20, 1, -0.01), (14, 1, -0.02), (17, 1, 0.0065), (17, 2, 0.003), (13, 1, -0.00275),
          (16, 1, -0.00275), (3, 1, -0.0035), (7, 1, -0.0035))  # fmt: skip
_AAA = ((19, 1, 0.001), (19, 2, 0.0001), (17, 1, -0.0001))
_EEE = ((20, 2, -0.001), (20, 1, -0.001), (14, 1, -0.001))
_WOO = ((14, 1, 0.001), (3, 1, -0.0005), (7, 1, -0.0005), (17, 2, -0.0005))
_WINK = ((11, 1, 0.001), (13, 1, -0.0003), (17, 0, 0.0003), (17, 1, 0.0003), (3, 1, -0.0003))
_PUPIL_X_POS = ((11, 0, 0.0007), (15, 0, 0.001))
_PUPIL_X_NEG = ((11, 0, 0.001), (15, 0, 0.0007))
_PUPIL_Y = ((11, 1, -0.001), (15, 1, -0.001))
_BLINK = (
    (11, 1, -0.001),
    (13, 1, 0.0003),
    (15, 1, -0.001),
    (16, 1, 0.0003),
    (1, 1, -0.00025),
    (2, 1, 0.00025),
)
_EYEBROW_UP = ((1, 1, 0.001), (2, 1, -0.001))
_EYEBROW_DOWN = ((1, 0, -0.001), (2, 0, 0.001), (1, 1, 0.0003), (2, 1, -0.0003))


def expression_deltas(
    values: dict[str, float], num_kp: int = 21
) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """The expression editor's keypoint deltas (1,K,3) and pose delta (pitch, yaw, roll) in degrees.

    Yaw is negated, `aaa` tilts the head down and `wink` turns and tilts it, as the editor does.
    """
    v = {name: float(values.get(name, 0.0)) for name in EXPRESSION_FIELDS}
    delta = torch.zeros(1, num_kp, 3, dtype=torch.float32)

    def add(table: tuple[tuple[int, int, float], ...], amount: float) -> None:
        for kp, axis, coef in table:
            delta[0, kp, axis] += coef * amount

    pitch, yaw, roll = v["rotate_pitch"], -v["rotate_yaw"], v["rotate_roll"]
    add(_SMILE, v["smile"])
    add(_AAA, v["aaa"])
    pitch -= 0.05 * v["aaa"]
    add(_EEE, v["eee"])
    add(_WOO, v["woo"])
    add(_WINK, v["wink"])
    roll -= 0.1 * v["wink"]
    yaw -= 0.1 * v["wink"]
    add(_PUPIL_X_POS if v["pupil_x"] > 0 else _PUPIL_X_NEG, v["pupil_x"])
    add(_PUPIL_Y, v["pupil_y"])
    add(_BLINK, v["blink"] - v["pupil_y"] / 2)
    add(_EYEBROW_UP if v["eyebrow"] > 0 else _EYEBROW_DOWN, v["eyebrow"])
    return delta, (pitch, yaw, roll)


def driving_keypoints(
    m: SourceMotion, delta_exp: torch.Tensor, delta_rot: tuple[float, float, float]
) -> torch.Tensor:
    """x_d = scale * ((kp + exp + delta) R_new^T) + t, with the full t (t_z included), as the editor does."""
    dp, dy, dr = delta_rot
    rot = rotation_matrix(m.pitch + dp, m.yaw + dy, m.roll + dr)
    x = (m.kp + m.exp + delta_exp.to(m.kp)) @ rot
    return x * m.scale.view(-1, 1, 1) + m.t[:, None, :]


def stitch(stitching_mlp: torch.nn.Module, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """Add the stitching MLP's keypoint deltas and its shared (dx, dy) shift to x_d."""
    b, k, _ = x_s.shape
    delta = stitching_mlp(torch.cat([x_s.reshape(b, -1), x_d.reshape(b, -1)], dim=1))
    x = x_d + delta[:, : 3 * k].reshape(b, k, 3)
    shift = torch.zeros_like(x)
    shift[..., :2] = delta[:, None, 3 * k : 3 * k + 2]
    return x + shift


def lip_delta(
    lip_mlp: torch.nn.Module, x_s: torch.Tensor, source_ratio: float, target_ratio: float
) -> torch.Tensor:
    b, k, _ = x_s.shape
    ratios = torch.tensor([[source_ratio, target_ratio]], dtype=x_s.dtype, device=x_s.device).expand(b, 2)
    return lip_mlp(torch.cat([x_s.reshape(b, -1), ratios], dim=1)).reshape(b, k, 3)


def eye_delta(
    eye_mlp: torch.nn.Module, x_s: torch.Tensor, left: float, right: float, target: float
) -> torch.Tensor:
    b, k, _ = x_s.shape
    ratios = torch.tensor([[left, right, target]], dtype=x_s.dtype, device=x_s.device).expand(b, 3)
    return eye_mlp(torch.cat([x_s.reshape(b, -1), ratios], dim=1)).reshape(b, k, 3)


LIP_ZERO_THRESHOLD = 0.03
