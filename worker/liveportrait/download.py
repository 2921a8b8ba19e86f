"""`make weights`: fetch the official LivePortrait checkpoints and face models from the HuggingFace hub.

Files land in DEST laid out as the hub's `liveportrait/` folder (its contents at DEST's root), with
InsightFace's two models under `insightface/models/buffalo_l/` as on the hub. Each is checked by
sha256: the five checkpoints and the two InsightFace models against published sums, `landmark.onnx`
against the hub's own LFS sha256 read from the file's metadata when it is fetched (and recorded in
`landmark.onnx.sha256` beside it, so that `--check` can verify it later without the hub). A file
that is already present and correct is not downloaded again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .face_files import DETECTOR_FILE, FACE_FILES, LANDMARK106_FILE, LANDMARK203_FILE
from .weights import ALL_FILES, BASE_FILES, STITCHING_FILE

REPO_ID = "KwaiVGI/LivePortrait"
REPO_FOLDER = "liveportrait"
# Published sums: the five checkpoints and InsightFace's two buffalo_l models.
SHA256: Mapping[str, str] = {
    BASE_FILES[
        "appearance_feature_extractor"
    ]: "5279bb8654293dbdf327030b397f107237dd9212fb11dd75b83dfb635211ceb5",
    BASE_FILES["motion_extractor"]: "251e6a94ad667a1d0c69526d292677165110ef7f0cf0f6d199f0e414e8aa0ca5",
    BASE_FILES["warping_module"]: "2f61a6f265fe344f14132364859a78bdbbc2068577170693da57fb96d636e282",
    BASE_FILES["spade_generator"]: "4780afc7909a9f84e24c01d73b31a555ef651521a1fe3b2429bd04534d992aee",
    STITCHING_FILE: "3652d5a3f95099141a56986aaddec92fadf0a73c87a20fac9a2c07c32b28b611",
    DETECTOR_FILE: "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
    LANDMARK106_FILE: "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
}
# Files whose sum is the hub's own (LFS sha256 from the file's metadata), recorded after download.
HUB_HASHED = (LANDMARK203_FILE,)
# Every file `make weights` brings, in the order it fetches them.
HUB_FILES = (*ALL_FILES, *FACE_FILES)
RECORD_SUFFIX = ".sha256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Fetch(Protocol):
    """`huggingface_hub.hf_hub_download`'s shape, as far as `download` uses it."""

    def __call__(self, *, repo_id: str, filename: str, local_dir: Path) -> str: ...


HubSha256 = Callable[[str, str], str]  # (repo_id, hub filename) -> the hub's sha256 of that file


def hub_filename(rel: str) -> str:
    """Where a file of WEIGHTS_DIR sits in the hub repository."""
    return rel if rel.startswith("insightface/") else f"{REPO_FOLDER}/{rel}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(dest: Path, rel: str) -> Path:
    return dest / f"{rel}{RECORD_SUFFIX}"


def recorded_sha256(dest: Path, rel: str) -> str | None:
    """The hub sum written beside a file when it was downloaded (`sha256sum` format), if any."""
    try:
        first = record_path(dest, rel).read_text().split()
    except OSError:
        return None
    return first[0] if first and _SHA256_HEX.fullmatch(first[0]) else None


def write_record(dest: Path, rel: str, digest: str) -> None:
    record_path(dest, rel).write_text(f"{digest}  {Path(rel).name}\n")


def expected_sha256(dest: Path, rel: str, sha256: Mapping[str, str] = SHA256) -> str | None:
    """The sum a file must have: the published one, else the recorded hub sum (None: unknown)."""
    return sha256.get(rel) or recorded_sha256(dest, rel)


def file_ok(dest: Path, rel: str, sha256: Mapping[str, str] = SHA256) -> bool:
    digest = expected_sha256(dest, rel, sha256)
    target = dest / rel
    return digest is not None and target.is_file() and sha256_of(target) == digest


def weights_complete(dest: Path, sha256: Mapping[str, str] = SHA256) -> bool:
    """True when all eight official files are present with the right hash (`landmark.onnx`'s as
    recorded when it was downloaded)."""
    return all(file_ok(dest, rel, sha256) for rel in HUB_FILES)


def hub_lfs_sha256(repo_id: str, filename: str) -> str:
    """The hub's sha256 of an LFS file: the ETag of its metadata (X-Linked-Etag for LFS files)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    etag = get_hf_file_metadata(hf_hub_url(repo_id=repo_id, filename=filename)).etag
    if etag is None or not _SHA256_HEX.fullmatch(etag):
        raise RuntimeError(f"{filename}: the hub gives no sha256 for it (etag {etag!r})")
    return etag


def _hf_hub_download(*, repo_id: str, filename: str, local_dir: Path) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename, local_dir=local_dir)


def download(
    dest: Path,
    *,
    repo_id: str = REPO_ID,
    fetch: Fetch = _hf_hub_download,
    sha256: Mapping[str, str] = SHA256,
    hub_sha256: HubSha256 = hub_lfs_sha256,
    only_missing: bool = False,
) -> list[str]:
    """Bring every official file into `dest`; return those fetched. A file present with the right
    hash is kept; with `only_missing` any present file is kept as it is (stand-ins, fine-tunes).
    A fetched file whose hash does not match is refused: it is deleted and nothing takes its place."""
    staging = dest / ".download"
    fetched_files: list[str] = []
    try:
        for rel in HUB_FILES:
            target = dest / rel
            if target.is_file() and (only_missing or file_ok(dest, rel, sha256)):
                print(f"ok       {rel}")
                continue
            name = hub_filename(rel)
            digest = sha256.get(rel)
            from_hub = digest is None
            if digest is None:
                digest = hub_sha256(repo_id, name)
                if target.is_file() and sha256_of(target) == digest:
                    write_record(dest, rel, digest)
                    print(f"verified {rel} (hub sha256)")
                    continue
            print(f"fetching {name} from {repo_id}", flush=True)
            fetched = Path(fetch(repo_id=repo_id, filename=name, local_dir=staging))
            got = sha256_of(fetched)
            if got != digest:
                fetched.unlink(missing_ok=True)
                source = "the hub's" if from_hub else "the published"
                raise RuntimeError(f"{rel}: sha256 {got} does not match {source} {digest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(fetched), target)
            if from_hub:
                write_record(dest, rel, digest)
            fetched_files.append(rel)
            print(f"verified {rel}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return fetched_files


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname or "", endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_if_missing(
    dest: Path,
    *,
    reachable: Callable[[], bool] = hub_reachable,
    fetch: Fetch = _hf_hub_download,
    sha256: Mapping[str, str] = SHA256,
    hub_sha256: HubSha256 = hub_lfs_sha256,
) -> int:
    """What `make run` does before it starts a worker: use what is there, and fetch only the files
    that are missing when the hub answers. Without weights the service still runs (requests fail
    with a clear error), and without the face models it uses the dlib fallback, so only a failed
    download is an error."""
    if weights_complete(dest, sha256):
        print(f"weights: {dest} is complete")
        return 0
    missing = [rel for rel in HUB_FILES if not (dest / rel).is_file()]
    if not missing:
        # e.g. fine-tuned or stand-in files: the loaders still check every key, shape and input
        print(f"weights: {dest} holds files other than the official release; using them")
        return 0
    if not reachable():
        if not any(rel in ALL_FILES for rel in missing):
            print(f"weights: the face models are missing in {dest} and the hub is unreachable;")
            print("          the worker uses the dlib fallback until `make weights` has run")
        else:
            print(f"weights: missing in {dest} and the hub is unreachable; requests will fail")
            print("          with 'model weights not installed' until `make weights` has run")
        return 0
    print(f"weights: fetching {len(missing)} missing file(s) into {dest} (make weights)", flush=True)
    try:
        download(dest, fetch=fetch, sha256=sha256, hub_sha256=hub_sha256, only_missing=True)
    except Exception as exc:  # network errors come in many types; report one line
        print(f"weights: download failed ({exc}); the service runs and reports missing weights per request")
        return 1
    return 0


def check(dest: Path, sha256: Mapping[str, str] = SHA256) -> int:
    """`--check`: one line per file that is not right, then `complete` or `incomplete`."""
    for rel in HUB_FILES:
        if not (dest / rel).is_file():
            print(f"missing  {rel}")
        elif expected_sha256(dest, rel, sha256) is None:
            print(f"unknown  {rel} (no recorded hub sha256; `make weights` verifies and records it)")
        elif not file_ok(dest, rel, sha256):
            print(f"differs  {rel}")
    complete = weights_complete(dest, sha256)
    print("complete" if complete else "incomplete")
    return 0 if complete else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", "weights")))
    parser.add_argument(
        "--check", action="store_true", help="only verify what is there; exit 1 if incomplete"
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="keep complete or other files; fetch only the missing ones, when the hub answers",
    )
    args = parser.parse_args(argv)
    if args.if_missing:
        return fetch_if_missing(args.dest)
    if args.check:
        return check(args.dest)
    try:
        download(args.dest)
    except Exception as exc:  # network errors come in many types; report one line
        print(f"error: could not fetch the weights: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
