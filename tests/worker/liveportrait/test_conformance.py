"""Every stage of the engine against the official implementation's numbers (conformance kit).

Tolerances are the kit's: float32 network outputs and keypoints within 1e-4 of each tensor's
maximum magnitude, uint8 images within one grey level. The large tensors are compared on the
subset that tests/data carries (`KitVectors.pick`); test_reference_subsets.py shows that the subset
catches a change of any stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from core.edit_params import EXPRESSION_FIELDS
from tests.data import KitVectors
from worker.liveportrait import keypoints as kp
from worker.liveportrait.arch import FULL
from worker.liveportrait.weights import Networks, load_networks

REL_TOL = 1e-4
FLOAT16_TOL = 5e-4 + REL_TOL


def relative_error(actual: torch.Tensor | np.ndarray, expected: np.ndarray) -> float:
    got = actual.detach().float().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    ref = expected.astype(np.float32)
    assert got.shape == ref.shape, f"shape {got.shape} != {ref.shape}"
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def assert_close(
    actual: torch.Tensor | np.ndarray, expected: np.ndarray, name: str, tol: float = REL_TOL
) -> None:
    err = relative_error(actual, expected)
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def kit_error(kit: KitVectors, name: str, actual: torch.Tensor | np.ndarray) -> float:
    """Relative error against the kit's `name`, on the elements tests/data carries."""
    got = actual.detach().float().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    return relative_error(kit.pick(name, got), kit.expected(name))


def assert_kit(kit: KitVectors, name: str, actual: torch.Tensor | np.ndarray, tol: float = REL_TOL) -> None:
    err = kit_error(kit, name, actual)
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def image_u8_error(kit: KitVectors, i: int, image: torch.Tensor | np.ndarray) -> int:
    """Largest grey-level difference from the kit's edit i image (HxWx3 uint8 or 1x3xHxW float)."""
    got = to_u8(image) if isinstance(image, torch.Tensor) else np.asarray(image)
    name = f"edit{i}_image_u8"
    return int(np.abs(kit.pick(name, got).astype(int) - kit.expected(name).astype(int)).max())


def to_u8(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def nets(kit_weights: Path) -> Networks:
    torch.set_num_threads(2)
    loaded = load_networks(kit_weights, FULL)
    loaded.decoder.fold_spectral_norm()
    return loaded


@pytest.fixture(scope="module")
def source(nets: Networks, kit: dict[str, np.ndarray]) -> dict[str, object]:
    image = torch.from_numpy(kit["input_tensor"])
    with torch.inference_mode():
        feature = nets.appearance(image)
        raw = nets.motion(image)
    motion = kp.source_motion(raw)
    return {"feature": feature, "raw": raw, "motion": motion, "x_s": kp.source_keypoints(motion)}


def test_appearance_features(source: dict, kit: dict) -> None:
    assert_kit(kit, "feature_3d", source["feature"])


@pytest.mark.parametrize("head", ["pitch", "yaw", "roll", "t", "exp", "scale", "kp"])
def test_motion_outputs(source: dict, kit: dict, head: str) -> None:
    assert_close(source["raw"][head], kit[f"motion_raw_{head}"], f"motion {head}")


@pytest.mark.parametrize("angle", ["pitch", "yaw", "roll"])
def test_head_pose_degrees(source: dict, kit: dict, angle: str) -> None:
    # The bins -> degrees stage on the official logits: exact up to float32 rounding.
    degrees = kp.bins_to_degrees(torch.from_numpy(kit[f"motion_raw_{angle}"]))
    assert_close(degrees, kit[f"pose_deg_{angle}"], f"{angle} degrees")
    # Chained on our own logits: the expectation over 66 bins amplifies the logits' float noise
    # (~1e-6) to ~1e-4 degrees, so near-zero angles are judged on the scale of the bins (97.5).
    ours = getattr(source["motion"], angle).item()
    assert abs(ours - kit[f"pose_deg_{angle}"].item()) <= REL_TOL * 97.5


def test_source_keypoints(source: dict, kit: dict) -> None:
    assert_close(source["x_s"], kit["x_s"], "x_s")


def test_lip_and_eye_retargeting_mlps(nets: Networks, kit: dict) -> None:
    with torch.inference_mode():
        assert_close(nets.lip(torch.from_numpy(kit["lip_mlp_input"])), kit["lip_mlp_output"], "lip MLP")
        assert_close(nets.eye(torch.from_numpy(kit["eye_mlp_input"])), kit["eye_mlp_output"], "eye MLP")
        x_s = torch.from_numpy(kit["x_s"])
        ratios = kit["lip_mlp_input"][0, 63:]
        delta = kp.lip_delta(nets.lip, x_s, float(ratios[0]), float(ratios[1]))
        assert_close(delta.reshape(1, -1), kit["lip_mlp_output"], "lip delta")
        eye = kit["eye_mlp_input"][0, 63:]
        delta = kp.eye_delta(nets.eye, x_s, float(eye[0]), float(eye[1]), float(eye[2]))
        assert_close(delta.reshape(1, -1), kit["eye_mlp_output"], "eye delta")


EDITS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def edits(nets: Networks, source: dict, kit: dict) -> dict[int, dict[str, torch.Tensor]]:
    out: dict[int, dict[str, torch.Tensor]] = {}
    x_s = torch.from_numpy(kit["x_s"])  # each stage is checked on the kit's own inputs
    for i in EDITS:
        names = [str(n) for n in kit["edit_param_names"]]
        assert names == list(EXPRESSION_FIELDS)
        values = dict(zip(names, kit[f"edit{i}_params"].tolist(), strict=True))
        delta_exp, delta_rot = kp.expression_deltas(values)
        with torch.inference_mode():
            x_d = kp.driving_keypoints(source["motion"], delta_exp, delta_rot)
            x_d_kit = torch.from_numpy(kit[f"edit{i}_x_d"])
            stitch_delta = nets.stitching(torch.cat([x_s.reshape(1, -1), x_d_kit.reshape(1, -1)], dim=1))
            stitched = kp.stitch(nets.stitching, x_s, x_d_kit)
            warped = nets.warping(
                source["feature"], kp_driving=torch.from_numpy(kit[f"edit{i}_x_d_stitched"]), kp_source=x_s
            )
            image = nets.decoder(warped["out"])
        out[i] = {
            "delta_exp": delta_exp,
            "delta_rot": torch.tensor(delta_rot),
            "x_d": x_d,
            "stitch_delta": stitch_delta,
            "x_d_stitched": stitched,
            "warped": warped["out"],
            "occlusion": warped["occlusion_map"],
            "image": image,
        }
    return out


@pytest.mark.parametrize("i", EDITS)
def test_expression_deltas(edits: dict, kit: dict, i: int) -> None:
    np.testing.assert_allclose(edits[i]["delta_exp"].numpy(), kit[f"edit{i}_delta_exp"], atol=1e-7, rtol=0)
    np.testing.assert_allclose(edits[i]["delta_rot"].numpy(), kit[f"edit{i}_delta_rot"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("i", EDITS)
def test_driving_keypoints(edits: dict, kit: dict, i: int) -> None:
    assert_close(edits[i]["x_d"], kit[f"edit{i}_x_d"], f"edit{i} x_d")


@pytest.mark.parametrize("i", EDITS)
def test_stitching(edits: dict, kit: dict, i: int) -> None:
    assert_close(edits[i]["stitch_delta"], kit[f"edit{i}_stitch_delta"], f"edit{i} stitching delta")
    assert_close(edits[i]["x_d_stitched"], kit[f"edit{i}_x_d_stitched"], f"edit{i} stitched x_d")


def test_warping_output_and_occlusion(edits: dict, kit: dict) -> None:
    assert_kit(kit, "edit0_warped", edits[0]["warped"])
    assert_kit(kit, "edit0_occlusion", edits[0]["occlusion"])


@pytest.mark.parametrize("i", EDITS)
def test_decoded_image(edits: dict, kit: dict, i: int) -> None:
    name = f"edit{i}_image_float"
    ref = kit.expected(name).astype(np.float32)
    got = kit.pick(name, edits[i]["image"].numpy())
    # the kit stores this image as float16: allow its rounding (half a unit in the last place near 1)
    assert np.abs(got - ref).max() <= FLOAT16_TOL
    diff = image_u8_error(kit, i, edits[i]["image"])
    assert diff <= 1, f"edit{i}: uint8 image off by {diff} grey levels"


@contextlib.contextmanager
def scaled(weight: torch.Tensor, factor: float) -> Iterator[None]:
    with torch.no_grad():
        weight.mul_(factor)
    try:
        yield
    finally:
        with torch.no_grad():
            weight.div_(factor)


def test_the_carried_subsets_catch_a_change_of_any_stage(
    nets: Networks, source: dict, edits: dict, kit: KitVectors
) -> None:
    """tests/data keeps 8,192 elements of each large tensor. Small changes of each stage, each
    a few times the tolerance over the whole tensor, must fail the subset comparison too, and the
    subset must see most of the whole tensor's error (`ours` is this engine's full output, which
    matches the official one within the tolerance)."""

    def both(name: str, ours: torch.Tensor, changed: torch.Tensor) -> tuple[float, float]:
        whole = relative_error(changed, ours.numpy())
        return whole, kit_error(kit, name, changed)

    image = torch.from_numpy(kit["input_tensor"])
    first_conv = next(
        m for m in nets.appearance.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)
    )
    with torch.inference_mode():
        with scaled(first_conv.weight, 1.0 + 1e-3):
            changed = nets.appearance(image)
        whole, sub = both("feature_3d", source["feature"], changed)
        assert sub > REL_TOL and sub > 0.5 * whole, ("appearance weights", whole, sub)
        # A local change: one 16x16 patch of the input a little brighter.
        patched = image.clone()
        patched[..., 120:136, 120:136] += 2 / 255
        whole, sub = both("feature_3d", source["feature"], nets.appearance(patched))
        assert sub > REL_TOL, ("input patch", whole, sub)

        x_s = torch.from_numpy(kit["x_s"])
        x_d = torch.from_numpy(kit["edit0_x_d_stitched"]) * (1.0 + 2e-3)
        warped = nets.warping(source["feature"], kp_driving=x_d, kp_source=x_s)
        whole, sub = both("edit0_warped", edits[0]["warped"], warped["out"])
        assert sub > REL_TOL and sub > 0.5 * whole, ("warping", whole, sub)
        whole, sub = both("edit0_occlusion", edits[0]["occlusion"], warped["occlusion_map"])
        assert sub > REL_TOL, ("occlusion", whole, sub)
        decoded = nets.decoder(warped["out"])
    float_sub = float(
        np.abs(kit.pick("edit0_image_float", decoded.numpy()) - kit.expected("edit0_image_float")).max()
    )
    assert float_sub > FLOAT16_TOL, ("decoder float", float_sub)
    assert image_u8_error(kit, 0, decoded) > 1, "decoder uint8"
