"""`make weights` against a fake HuggingFace hub on 127.0.0.1 (HF_ENDPOINT), through the real
`hf_hub_download`: small stand-in files, whose sums the tests pass in place of the published table."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from worker.liveportrait import download as dl
from worker.liveportrait.face_files import DETECTOR_FILE, FACE_FILES, LANDMARK106_FILE, LANDMARK203_FILE
from worker.liveportrait.weights import ALL_FILES

EIGHT = (*ALL_FILES, *FACE_FILES)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[3]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub:
    """One model repository at revision `main`, answering what `hf_hub_download` asks: HEAD for the
    metadata (X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size) and GET for the bytes."""

    def __init__(self) -> None:
        self.files = {dl.hub_filename(rel): f"stand-in {rel}\n".encode() * 50 for rel in EIGHT}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, request: BaseHTTPRequestHandler, *, body: bool) -> None:
        prefix = f"/{dl.REPO_ID}/resolve/main/"
        name = request.path[len(prefix) :] if request.path.startswith(prefix) else None
        self.requests.append((request.command, name or request.path))
        data = self.files.get(name) if name is not None else None
        if data is None:
            request.send_response(404)
            request.send_header("X-Error-Code", "EntryNotFound")
            request.send_header("X-Repo-Commit", COMMIT)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        digest = _sha(data)
        request.send_response(200)
        request.send_header("X-Repo-Commit", COMMIT)
        request.send_header("ETag", f'"{digest}"')
        request.send_header("X-Linked-Etag", f'"{digest}"')
        request.send_header("X-Linked-Size", str(len(data)))
        request.send_header("Content-Length", str(len(data)))
        request.send_header("Content-Type", "application/octet-stream")
        request.end_headers()
        if body:
            request.wfile.write(data)

    def gets(self) -> list[str]:
        return [name for method, name in self.requests if method == "GET"]

    def table(self) -> dict[str, str]:
        """The sums of this hub's files, in place of the published ones."""
        return {rel: _sha(self.files[dl.hub_filename(rel)]) for rel in EIGHT}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants as hf_constants

    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    # Read when huggingface_hub is imported, maybe before this test, maybe with HF_ENDPOINT unset:
    # `download` passes the endpoint itself, and the agent-harness registry that huggingface_hub
    # fetches for its user agent from the import-time endpoint is not asked for.
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    try:
        yield fake
    finally:
        fake.close()


def _download(hub: FakeHub, dest: Path) -> list[str]:
    return dl.download(dest, sha256=hub.table())


def _place(dest: Path, rel: str, data: bytes) -> None:
    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
    (dest / rel).write_bytes(data)


def test_hub_paths_and_the_published_table() -> None:
    assert dl.hub_filename(ALL_FILES[0]) == f"liveportrait/{ALL_FILES[0]}"
    assert dl.hub_filename(LANDMARK203_FILE) == "liveportrait/landmark.onnx"
    assert dl.hub_filename(DETECTOR_FILE) == "insightface/models/buffalo_l/det_10g.onnx"
    assert dl.hub_filename(LANDMARK106_FILE) == "insightface/models/buffalo_l/2d106det.onnx"
    assert set(dl.SHA256) == set(EIGHT) and dl.HUB_FILES == EIGHT
    assert dl.SHA256[DETECTOR_FILE] == "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"
    assert dl.SHA256[LANDMARK106_FILE] == "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf"
    assert dl.SHA256[LANDMARK203_FILE] == "31d22a5041326c31f19b78886939a634a5aedcaa5ab8b9b951a1167595d147db"


def test_all_eight_files_land_in_the_official_layout(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    assert _download(hub, dest) == list(EIGHT)
    assert sorted(hub.gets()) == sorted(hub.files)
    for rel in EIGHT:
        assert (dest / rel).read_bytes() == hub.files[dl.hub_filename(rel)]
    assert (dest / "landmark.onnx").is_file() and (dest / "base_models").is_dir()
    assert (dest / "insightface/models/buffalo_l/det_10g.onnx").is_file()
    assert (dest / "insightface/models/buffalo_l/2d106det.onnx").is_file()
    assert not (dest / "liveportrait").exists()
    # Nothing else: no staging folder, no hub metadata.
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == set(EIGHT)
    assert dl.weights_complete(dest, hub.table())


def test_a_wrong_hash_is_refused_with_nothing_left_in_place(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    table = hub.table()
    hub.files[dl.hub_filename(DETECTOR_FILE)] = b"tampered"
    with pytest.raises(RuntimeError, match="det_10g.onnx: sha256 .* does not match the published"):
        dl.download(dest, sha256=table)
    assert not (dest / DETECTOR_FILE).exists()
    assert not (dest / ".download").exists()
    assert not dl.weights_complete(dest, table)


def test_a_present_correct_file_is_not_fetched_again(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    for rel in (ALL_FILES[0], DETECTOR_FILE, LANDMARK203_FILE):
        _place(dest, rel, hub.files[dl.hub_filename(rel)])
    fetched = _download(hub, dest)
    assert fetched == [rel for rel in EIGHT if rel not in (ALL_FILES[0], DETECTOR_FILE, LANDMARK203_FILE)]
    assert sorted(hub.gets()) == sorted(dl.hub_filename(rel) for rel in fetched)
    hub.requests.clear()
    assert _download(hub, dest) == []
    assert hub.requests == []  # a complete folder costs no request at all


def test_make_weights_replaces_a_file_with_another_hash(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    _download(hub, dest)
    (dest / LANDMARK106_FILE).write_bytes(b"stand-in")
    hub.requests.clear()
    assert _download(hub, dest) == [LANDMARK106_FILE]
    assert hub.gets() == [dl.hub_filename(LANDMARK106_FILE)]
    assert dl.weights_complete(dest, hub.table())


def test_check_complete_and_incomplete(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "weights"
    assert dl.check(dest, hub.table()) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"missing  {rel}" for rel in EIGHT] + ["incomplete"]
    _download(hub, dest)
    capsys.readouterr()
    assert dl.check(dest, hub.table()) == 0
    assert capsys.readouterr().out.splitlines() == ["complete"]
    (dest / DETECTOR_FILE).unlink()
    (dest / LANDMARK203_FILE).write_bytes(b"fine-tuned")
    assert dl.check(dest, hub.table()) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"missing  {DETECTOR_FILE}",
        f"differs  {LANDMARK203_FILE}",
        "incomplete",
    ]
    # The command line checks against the published sums: these stand-ins are not the release.
    _download(hub, dest)
    capsys.readouterr()
    assert dl.main(["--check", "--dest", str(dest)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"differs  {rel}" for rel in EIGHT] + ["incomplete"]


def test_the_command_refuses_files_that_do_not_match_the_published_sums(hub: FakeHub, tmp_path: Path) -> None:
    """`make weights` as a process: HF_ENDPOINT set before huggingface_hub is imported."""
    dest = tmp_path / "weights"
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "NO_PROXY": "127.0.0.1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker.liveportrait.download", "--dest", str(dest)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    first = ALL_FILES[0]
    assert f"error: could not fetch the weights: {first}: sha256" in result.stderr
    assert hub.gets() == [dl.hub_filename(first)]
    assert not any(p.is_file() for p in dest.rglob("*"))


def _old_folder(dest: Path) -> None:
    """A weights folder from before the face models: the five checkpoints only (stand-ins here,
    whose other hashes are used as they are)."""
    for rel in ALL_FILES:
        _place(dest, rel, b"stand-in checkpoint")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_hub_reachable_follows_hf_endpoint(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    assert dl.hub_reachable()
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    assert not dl.hub_reachable(timeout=1.0)


def test_if_missing_keeps_an_old_folder_when_the_hub_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    dest = tmp_path / "weights"
    _old_folder(dest)
    assert dl.main(["--if-missing", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "3 file(s) missing" in out and "hub is unreachable" in out and "dlib fallback" in out
    assert all((dest / rel).read_bytes() == b"stand-in checkpoint" for rel in ALL_FILES)
    assert not any((dest / rel).exists() for rel in FACE_FILES)


def test_if_missing_without_checkpoints_and_without_the_hub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "weights"
    assert dl.fetch_if_missing(dest, reachable=lambda: False) == 0
    out = capsys.readouterr().out
    assert "8 file(s) missing" in out and "model weights not installed" in out


def test_if_missing_fetches_only_the_face_models_into_an_old_folder(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "weights"
    _old_folder(dest)
    assert dl.fetch_if_missing(dest, sha256=hub.table()) == 0
    assert sorted(hub.gets()) == sorted(dl.hub_filename(rel) for rel in FACE_FILES)
    assert all((dest / rel).read_bytes() == b"stand-in checkpoint" for rel in ALL_FILES)
    assert all((dest / rel).read_bytes() == hub.files[dl.hub_filename(rel)] for rel in FACE_FILES)
    capsys.readouterr()
    hub.requests.clear()
    assert dl.fetch_if_missing(dest, sha256=hub.table()) == 0
    assert hub.requests == []
    assert "other than the official release; using them" in capsys.readouterr().out


def test_if_missing_with_a_complete_folder(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "weights"
    _download(hub, dest)
    hub.requests.clear()
    capsys.readouterr()
    assert dl.fetch_if_missing(dest, sha256=hub.table()) == 0
    assert hub.requests == [] and "is complete" in capsys.readouterr().out


def test_if_missing_reports_a_refused_face_model(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the published sums, the fake hub's face models are refused: the command says so,
    exits 1, leaves nothing in their place and the old checkpoints untouched."""
    dest = tmp_path / "weights"
    _old_folder(dest)
    assert dl.main(["--if-missing", "--dest", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "download failed" in out and "does not match the published" in out and "dlib fallback" in out
    assert hub.gets() == [dl.hub_filename(FACE_FILES[0])]
    assert not any((dest / rel).exists() for rel in FACE_FILES)
    assert not (dest / ".download").exists()
    assert all((dest / rel).read_bytes() == b"stand-in checkpoint" for rel in ALL_FILES)
