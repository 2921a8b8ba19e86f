"""`portrait-queue` end to end: the installed command run as a subprocess against an API child
with authentication on, real workers, PostgreSQL, Redis and S3."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.image_server import ImageServer
from tests.support.images import heic
from tests.support.keyed_api import keyed_api
from tests.support.processes import BIN, free_port

pytestmark = pytest.mark.usefixtures("workers")

CLI = str(BIN / "portrait-queue")


@pytest.fixture(scope="module")
def server(migrated: dict[str, str], logs_dir: Path) -> Iterator[tuple[str, str]]:
    with keyed_api(migrated, logs_dir, "cli-api") as running:
        yield running


def run(
    *args: str, key: str | None = None, url: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTRAIT_QUEUE_", "FAL_KEY"))}
    if url:
        env["PORTRAIT_QUEUE_URL"] = url
    if key:
        env["PORTRAIT_QUEUE_KEY"] = key
    return subprocess.run([CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def test_edit_uploads_waits_and_downloads(
    server: tuple[str, str], image_server: ImageServer, tmp_path: Path
) -> None:
    base, key = server
    out = tmp_path / "out.jpg"
    done = run(
        "edit",
        str(image_server.root / "face.jpg"),
        "--smile",
        "1",
        "--blink",
        "-10",
        "-o",
        str(out),
        key=key,
        url=base,
    )
    assert done.returncode == 0, done.stderr
    assert "queued, position" in done.stderr  # the queue position is shown
    assert "%" in done.stderr and "done" in done.stderr  # then the bar, then the end
    assert done.stdout.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.width > 0


def test_json_output_and_request_commands(
    server: tuple[str, str], image_server: ImageServer, tmp_path: Path
) -> None:
    base, key = server
    face = str(image_server.root / "face.jpg")
    options = ("--no-pasteback", "--output-format", "png", "--json", "-q")
    done = run("edit", face, *options, cwd=tmp_path, key=key, url=base)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # -q: nothing but the JSON
    body = json.loads(done.stdout)
    rid = body["request_id"]
    assert body["image"]["content_type"] == "image/png"
    assert (tmp_path / body["output"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # face.edited.png

    status = json.loads(run("status", rid, "--json", "--logs", key=key, url=base).stdout)
    assert status["status"] == "COMPLETED" and status["logs"]
    saved = tmp_path / "again.png"
    result = run("result", rid, "-o", str(saved), key=key, url=base)
    assert result.returncode == 0 and saved.stat().st_size == body["image"]["file_size"]
    cancel = run("cancel", rid, key=key, url=base)
    assert cancel.returncode == 0 and "already completed" in cancel.stdout


def test_edit_takes_a_heic_file_or_data_uri(
    server: tuple[str, str], image_server: ImageServer, tmp_path: Path
) -> None:
    """A phone's HEIC, uploaded as image/heic, and the same bytes inline as a data URI: both run
    through the API and a worker like a JPEG (EXIF orientation 6: the face is upright once turned)."""
    base, key = server
    with Image.open(image_server.root / "face.jpg") as face:
        upright = face.crop((64, 0, 448, 512))  # 384 wide: a turn would show in the result's size
    photo = heic(upright.transpose(Image.Transpose.ROTATE_90), orientation=6, quality=70)
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(photo)
    uri = "data:image/heic;base64," + base64.b64encode(photo).decode()
    for source in (str(path), uri):
        done = run("edit", source, "--json", "-q", cwd=tmp_path, key=key, url=base)
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["image"]["content_type"] == "image/jpeg"
        with Image.open(tmp_path / body["output"]) as edited:
            assert edited.format == "JPEG" and edited.size == (384, 512)
        status = json.loads(run("status", body["request_id"], "--json", "--logs", key=key, url=base).stdout)
        assert any(line["message"].startswith("input image: HEIC 384x512") for line in status["logs"])


def test_friendly_one_line_errors(server: tuple[str, str], image_server: ImageServer) -> None:
    base, key = server
    face = str(image_server.root / "face.jpg")

    unauthorized = run("edit", face, key="nobody:nothing", url=base)
    assert unauthorized.returncode == 1
    assert unauthorized.stderr.splitlines()[-1].startswith("error: unauthorized (401)")

    refused = run("status", "x", url=f"http://127.0.0.1:{free_port()}", key=key)
    assert refused.returncode == 1 and "connection refused" in refused.stderr
    assert "Traceback" not in refused.stderr

    out_of_range = run("edit", face, "--smile", "5", key=key, url=base)
    assert out_of_range.returncode == 1
    assert "smile: Input should be less than or equal to 1.3" in out_of_range.stderr

    no_face = run("edit", str(image_server.root / "noise.png"), "-q", key=key, url=base)
    assert no_face.returncode == 1
    # The request's own 422 detail list, summarised to one line.
    assert "failed (422): image_url:" in no_face.stderr and no_face.stderr.count("\n") == 1


def test_every_schema_field_is_an_option() -> None:
    from core.edit_params import EditParams

    help_text = run("edit", "--help").stdout
    for name in EditParams.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name


def test_key_management(server: tuple[str, str], migrated: dict[str, str]) -> None:
    base, _ = server
    created = run("keys", "create", "cli-made", "--json")
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    # Accepted: the answer is about the (unknown) request, not the key.
    assert "not found (404)" in run("status", str(uuid.uuid4()), key=made["key"], url=base).stderr

    listed = json.loads(run("keys", "list", "--json").stdout)
    assert any(k["key_id"] == made["key_id"] and k["revoked_at"] is None for k in listed)
    assert run("keys", "revoke", made["key_id"]).returncode == 0
    after = run("status", str(uuid.uuid4()), key=made["key"], url=base)
    assert "unauthorized (401)" in after.stderr
    again = run("keys", "revoke", made["key_id"])
    assert again.returncode == 1 and again.stderr.startswith("error: no active key")
