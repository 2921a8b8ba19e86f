"""`python -m worker.liveportrait INPUT OUTPUT --weights DIR [--params JSON]` as a user runs it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.images import heic

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "worker.liveportrait", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def portrait(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("cli") / "portrait.jpg"
    Image.fromarray(astronaut).save(path, "JPEG", quality=95)
    return path


def test_edit_writes_the_image_and_reports_it(portrait: Path, tiny_weights_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    params = '{"smile": 1, "flag_do_crop": false, "flag_pasteback": false, "output_format": "png"}'
    weights = ["--weights", str(tiny_weights_dir), "--arch", "tiny"]
    proc = run(str(portrait), str(out), *weights, "--params", params)
    assert proc.returncode == 0, proc.stderr
    assert "width=512 height=512" in proc.stdout and "time=" in proc.stdout
    img = Image.open(io.BytesIO(out.read_bytes()))
    assert img.format == "PNG" and img.size == (512, 512)


def test_format_follows_the_extension(portrait: Path, tiny_weights_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    proc = run(str(portrait), str(out), "--weights", str(tiny_weights_dir), "--arch", "tiny")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).format == "PNG"


def test_edits_a_heic_from_a_phone(astronaut: np.ndarray, tiny_weights_dir: Path, tmp_path: Path) -> None:
    # Stored on its side with EXIF orientation 6, as a phone held upright saves it: the default
    # request (crop and paste-back) must find the face upright and answer at the upright size.
    upright = astronaut[:, 64:448]
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(heic(np.ascontiguousarray(np.rot90(upright)), orientation=6))
    out = tmp_path / "out.jpg"
    proc = run(str(photo), str(out), "--weights", str(tiny_weights_dir), "--arch", "tiny")
    assert proc.returncode == 0, proc.stderr
    assert "width=384 height=512" in proc.stdout
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (384, 512)
        # Outside the face the picture is the input's, the right way up.
        assert np.abs(np.asarray(img, dtype=int)[-64:] - upright[-64:]).mean() < 12


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ('{"smile": 9}', "smile"),
        ('{"nope": 1}', "nope"),
        ('{"smile": ', "invalid --params"),
        ('{"image_url": "x"}', "image_url"),
        ('{"output_format": "gif"}', "output_format"),
    ],
)
def test_bad_params_exit_with_one_line(portrait: Path, tmp_path: Path, params: str, reason: str) -> None:
    proc = run(str(portrait), str(tmp_path / "o.jpg"), "--weights", str(tmp_path), "--params", params)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0]


def test_bad_image_and_missing_weights(portrait: Path, tiny_weights_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00" * 100)
    proc = run(str(junk), str(tmp_path / "o.jpg"), "--weights", str(tiny_weights_dir), "--arch", "tiny")
    # One error line; the only other line is the warning that these weights lack the face models.
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and lines[-1].startswith("error: ")
    assert all("dlib fallback" in line for line in lines[:-1]) and len(lines) <= 2
    proc = run(str(portrait), str(tmp_path / "o.jpg"), "--weights", str(tmp_path / "none"))
    assert proc.returncode != 0 and "model weights not installed" in proc.stderr
    proc = run(str(tmp_path / "missing.jpg"), str(tmp_path / "o.jpg"), "--weights", str(tiny_weights_dir))
    assert proc.returncode != 0 and "cannot read" in proc.stderr
    assert not (tmp_path / "o.jpg").exists()
