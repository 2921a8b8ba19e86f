"""Strict checkpoint loading: the official layout, key for key and shape for shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.data import KIT_DIR
from worker.liveportrait.arch import FULL, TINY
from worker.liveportrait.errors import WeightsError
from worker.liveportrait.testing import write_random_weights
from worker.liveportrait.weights import BASE_FILES, STITCHING_FILE, build_networks, load_networks


def test_modules_match_the_manifest() -> None:
    manifest = json.loads((KIT_DIR / "manifest.json").read_text())
    nets = build_networks(FULL)
    modules = nets.base_modules()
    parts = {"retarget_shoulder": nets.stitching, "retarget_mouth": nets.lip, "retarget_eye": nets.eye}
    for entry in manifest["files"]:
        if entry["layout"] == "state_dict":
            assert BASE_FILES[entry["name"]] == entry["path"]
            groups = {entry["name"]: (modules[entry["name"]], entry["tensors"])}
        else:
            assert entry["path"] == STITCHING_FILE
            groups = {p: (parts[p], entry["parts"][p]) for p in parts}
        for name, (module, tensors) in groups.items():
            # As lists: the key order is the official files' too, which kit_weights relies on.
            expected = [(key, tuple(shape)) for key, shape, _ in tensors]
            got = [(key, tuple(t.shape)) for key, t in module.state_dict().items()]
            assert got == expected, name
            params = sum(p.numel() for p in module.parameters())
            if "parameters" in entry and entry["layout"] == "state_dict":
                assert params == entry["parameters"], name


def test_kit_weights_load(kit_weights: Path) -> None:
    nets = load_networks(kit_weights, FULL)
    assert not nets.decoder.training


@pytest.fixture()
def tiny_weights(tmp_path: Path) -> Path:
    return write_random_weights(tmp_path / "w", arch="tiny", seed=1)


def rewrite(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="model weights not installed"):
        load_networks(tmp_path / "nowhere", FULL)


def test_missing_file_names_the_file(tiny_weights: Path) -> None:
    (tiny_weights / BASE_FILES["warping_module"]).unlink()
    with pytest.raises(WeightsError, match="warping_module.pth"):
        load_networks(tiny_weights, "tiny")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("second.bias"), "missing tensor 'second.bias'"),
        (lambda s: s.__setitem__("second.extra", torch.zeros(1)), "unexpected tensor 'second.extra'"),
        (lambda s: s.__setitem__("second.bias", torch.zeros(3)), r"'second.bias' has shape \(3,\)"),
    ],
    ids=["missing", "extra", "misshapen"],
)
def test_strict_keys_and_shapes(tiny_weights: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tiny_weights / BASE_FILES["appearance_feature_extractor"]
    rewrite(path, change)
    with pytest.raises(WeightsError, match=message) as info:
        load_networks(tiny_weights, TINY)
    assert "appearance_feature_extractor.pth" in str(info.value)


def test_stitching_parts_are_required_and_prefix_is_stripped(tiny_weights: Path) -> None:
    path = tiny_weights / STITCHING_FILE
    bundle = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in bundle["retarget_eye"])
    # the real file carries extra entries that must be ignored
    bundle["unrelated"] = {"x": torch.zeros(2)}
    torch.save(bundle, path)
    nets = load_networks(tiny_weights, TINY)
    assert torch.equal(nets.eye.mlp[0].weight, bundle["retarget_eye"]["module.mlp.0.weight"])
    del bundle["retarget_mouth"]
    torch.save(bundle, path)
    with pytest.raises(WeightsError, match="retarget_mouth"):
        load_networks(tiny_weights, TINY)


class Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (shutil.rmtree, ("/nonexistent-portrait-queue-test",))


def test_checkpoints_load_with_weights_only(tiny_weights: Path) -> None:
    torch.save({"first.conv.weight": Payload()}, tiny_weights / BASE_FILES["appearance_feature_extractor"])
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_networks(tiny_weights, TINY)
