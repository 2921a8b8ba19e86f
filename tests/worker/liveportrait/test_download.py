"""`make weights` without the network: the hub is a dict of bytes, the fetch and its metadata injected."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from worker.liveportrait import download as dl
from worker.liveportrait.face_files import DETECTOR_FILE, FACE_FILES, LANDMARK106_FILE, LANDMARK203_FILE
from worker.liveportrait.weights import ALL_FILES

EIGHT = (*ALL_FILES, *FACE_FILES)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub:
    """The hub repository's files by hub path; records what was fetched and what metadata read."""

    def __init__(self) -> None:
        self.files = {dl.hub_filename(rel): f"contents of {rel}".encode() for rel in EIGHT}
        self.fetched: list[str] = []
        self.metadata_read: list[str] = []

    def fetch(self, *, repo_id: str, filename: str, local_dir: Path) -> str:
        assert repo_id == dl.REPO_ID
        self.fetched.append(filename)
        path = local_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.files[filename])
        return str(path)

    def sha256(self, repo_id: str, filename: str) -> str:
        assert repo_id == dl.REPO_ID
        self.metadata_read.append(filename)
        return _sha(self.files[filename])

    def table(self) -> dict[str, str]:
        """The published sums for this hub: all but landmark.onnx, whose sum comes from metadata."""
        return {rel: _sha(self.files[dl.hub_filename(rel)]) for rel in EIGHT if rel not in dl.HUB_HASHED}


def _download(hub: FakeHub, dest: Path) -> list[str]:
    return dl.download(dest, fetch=hub.fetch, sha256=hub.table(), hub_sha256=hub.sha256)


def test_hub_paths_and_the_published_table() -> None:
    assert dl.hub_filename(ALL_FILES[0]) == f"liveportrait/{ALL_FILES[0]}"
    assert dl.hub_filename(LANDMARK203_FILE) == "liveportrait/landmark.onnx"
    assert dl.hub_filename(DETECTOR_FILE) == "insightface/models/buffalo_l/det_10g.onnx"
    assert dl.hub_filename(LANDMARK106_FILE) == "insightface/models/buffalo_l/2d106det.onnx"
    assert set(dl.SHA256) | set(dl.HUB_HASHED) == set(EIGHT)
    assert dl.SHA256[DETECTOR_FILE] == "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"
    assert dl.SHA256[LANDMARK106_FILE] == "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf"


def test_all_eight_files_land_in_the_official_layout(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    assert _download(hub, dest) == list(EIGHT)
    for rel in EIGHT:
        assert (dest / rel).read_bytes() == hub.files[dl.hub_filename(rel)]
    assert (dest / "landmark.onnx").is_file() and (dest / "base_models").is_dir()
    assert (dest / "insightface/models/buffalo_l/det_10g.onnx").is_file()
    assert (dest / "insightface/models/buffalo_l/2d106det.onnx").is_file()
    assert not (dest / ".download").exists()
    assert dl.weights_complete(dest, hub.table())


def test_landmark_hash_comes_from_the_hub_metadata_and_is_recorded(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    _download(hub, dest)
    assert hub.metadata_read == ["liveportrait/landmark.onnx"]
    digest = _sha(hub.files["liveportrait/landmark.onnx"])
    assert (dest / "landmark.onnx.sha256").read_text() == f"{digest}  landmark.onnx\n"
    assert dl.recorded_sha256(dest, LANDMARK203_FILE) == digest
    # A later run verifies it from the record: no metadata read, nothing fetched.
    hub.fetched.clear()
    hub.metadata_read.clear()
    assert _download(hub, dest) == []
    assert hub.fetched == [] and hub.metadata_read == []


def test_landmark_not_matching_the_hub_metadata_is_refused(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    hub.sha256 = lambda repo_id, filename: "0" * 64  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="landmark.onnx: sha256 .* does not match the hub's"):
        _download(hub, dest)
    assert not (dest / LANDMARK203_FILE).exists()
    assert not (dest / "landmark.onnx.sha256").exists()
    assert not (dest / ".download").exists()


def test_a_wrong_hash_is_refused_with_nothing_left_in_place(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    table = hub.table()
    hub.files[dl.hub_filename(DETECTOR_FILE)] = b"tampered"
    with pytest.raises(RuntimeError, match="det_10g.onnx: sha256 .* does not match the published"):
        dl.download(dest, fetch=hub.fetch, sha256=table, hub_sha256=hub.sha256)
    assert not (dest / DETECTOR_FILE).exists()
    assert not (dest / ".download").exists()
    assert not dl.weights_complete(dest, table)


def test_a_correct_present_file_is_not_fetched_again(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    for rel in (ALL_FILES[0], DETECTOR_FILE):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(hub.files[dl.hub_filename(rel)])
    fetched = _download(hub, dest)
    assert ALL_FILES[0] not in fetched and DETECTOR_FILE not in fetched
    assert dl.hub_filename(DETECTOR_FILE) not in hub.fetched
    assert len(fetched) == 6


def test_a_present_landmark_matching_the_hub_is_recorded_not_fetched(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / LANDMARK203_FILE).write_bytes(hub.files["liveportrait/landmark.onnx"])
    assert LANDMARK203_FILE not in _download(hub, dest)
    assert "liveportrait/landmark.onnx" not in hub.fetched
    assert dl.recorded_sha256(dest, LANDMARK203_FILE) == _sha(hub.files["liveportrait/landmark.onnx"])


def test_make_weights_replaces_a_file_with_another_hash(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    _download(hub, dest)
    (dest / LANDMARK106_FILE).write_bytes(b"stand-in")
    assert _download(hub, dest) == [LANDMARK106_FILE]
    assert dl.weights_complete(dest, hub.table())


def test_check_complete_and_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    assert dl.check(dest, hub.table()) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "incomplete"
    _download(hub, dest)
    capsys.readouterr()
    assert dl.check(dest, hub.table()) == 0
    assert capsys.readouterr().out.splitlines() == ["complete"]
    # Without its record, landmark.onnx cannot be verified offline.
    (dest / "landmark.onnx.sha256").unlink()
    assert dl.check(dest, hub.table()) == 1
    out = capsys.readouterr().out
    assert "unknown  landmark.onnx" in out and out.endswith("incomplete\n")
    # The command line with the published table: these stand-ins are not the release.
    assert dl.main(["--check", "--dest", str(dest)]) == 1


def test_check_names_a_missing_face_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    _download(hub, dest)
    (dest / DETECTOR_FILE).unlink()
    capsys.readouterr()
    assert dl.check(dest, hub.table()) == 1
    assert capsys.readouterr().out.splitlines() == [f"missing  {DETECTOR_FILE}", "incomplete"]


def _old_folder(hub: FakeHub, dest: Path, contents: bytes | None = None) -> None:
    """A weights folder from before the face models: the five checkpoints only."""
    for rel in ALL_FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(contents or hub.files[dl.hub_filename(rel)])


def _unreachable() -> bool:
    return False


def _reachable() -> bool:
    return True


def _if_missing(hub: FakeHub, dest: Path, reachable: bool) -> int:
    return dl.fetch_if_missing(
        dest,
        reachable=_reachable if reachable else _unreachable,
        fetch=hub.fetch,
        sha256=hub.table(),
        hub_sha256=hub.sha256,
    )


def test_if_missing_keeps_an_old_folder_when_the_hub_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    _old_folder(hub, dest, b"stand-in checkpoint")
    assert _if_missing(hub, dest, reachable=False) == 0
    assert hub.fetched == []
    assert "dlib fallback" in capsys.readouterr().out
    assert all((dest / rel).read_bytes() == b"stand-in checkpoint" for rel in ALL_FILES)


def test_if_missing_fetches_only_the_missing_files(tmp_path: Path) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    _old_folder(hub, dest, b"stand-in checkpoint")  # other hashes: used as they are
    assert _if_missing(hub, dest, reachable=True) == 0
    assert hub.fetched == [dl.hub_filename(rel) for rel in FACE_FILES]
    assert all((dest / rel).read_bytes() == b"stand-in checkpoint" for rel in ALL_FILES)
    assert all((dest / rel).is_file() for rel in FACE_FILES)


def test_if_missing_uses_a_full_folder_of_stand_ins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    for rel in EIGHT:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(b"stand-in")
    assert _if_missing(hub, dest, reachable=True) == 0
    assert hub.fetched == [] and hub.metadata_read == []
    assert "using them" in capsys.readouterr().out


def test_if_missing_with_a_complete_folder_and_a_failed_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = FakeHub()
    dest = tmp_path / "weights"
    _download(hub, dest)
    hub.fetched.clear()
    assert _if_missing(hub, dest, reachable=True) == 0
    assert hub.fetched == [] and "is complete" in capsys.readouterr().out
    table = hub.table()
    (dest / DETECTOR_FILE).unlink()
    hub.files[dl.hub_filename(DETECTOR_FILE)] = b"tampered"
    code = dl.fetch_if_missing(
        dest, reachable=_reachable, fetch=hub.fetch, sha256=table, hub_sha256=hub.sha256
    )
    assert code == 1
    assert not (dest / DETECTOR_FILE).exists()
    assert "download failed" in capsys.readouterr().out
