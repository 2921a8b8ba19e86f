"""Fixtures for the engine tests: the conformance kit and its seed-0 weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

KIT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "liveportrait-kit"


@pytest.fixture(scope="session")
def kit_dir() -> Path:
    if not (KIT_DIR / "vectors_seed0.npz").is_file():
        pytest.skip(f"conformance kit not found at {KIT_DIR}")
    return KIT_DIR


@pytest.fixture(scope="session")
def kit(kit_dir: Path) -> dict[str, np.ndarray]:
    with np.load(kit_dir / "vectors_seed0.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def kit_weights(kit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kit's seed-0 checkpoints, regenerated once per test run (about 520 MB, ~12 s)."""
    out = tmp_path_factory.mktemp("kit-weights-seed0")
    subprocess.run(
        [sys.executable, str(kit_dir / "make_weights.py"), str(out), "--seed", "0"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in weights of the narrow architecture: real code paths, fast on a CPU."""
    from worker.liveportrait.testing import write_random_weights

    return write_random_weights(tmp_path_factory.mktemp("tiny-weights"), arch="tiny", seed=0)


@pytest.fixture(scope="session")
def astronaut(kit: dict[str, np.ndarray]) -> np.ndarray:
    """The kit's portrait (skimage's astronaut, 512x512 RGB)."""
    return np.ascontiguousarray(kit["source_image"])
