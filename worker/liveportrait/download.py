"""`make weights`: fetch the official LivePortrait checkpoints and face models from the HuggingFace hub.

Files land in DEST laid out as the hub's `liveportrait/` folder (its contents at DEST's root), with
InsightFace's two models under `insightface/models/buffalo_l/` as on the hub. Each is checked
against a pinned sha256 before it takes its place; a file that is already present and correct is
not downloaded again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
# The hub's LFS sha256 of each file. landmark.onnx (114,666,491 bytes): the Git LFS pointer of
# `pretrained_weights/liveportrait/landmark.onnx` in camenduru/LivePortrait-hf, a mirror of the
# hub repository whose pointers for the five checkpoints carry exactly the sums below.
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
    LANDMARK203_FILE: "31d22a5041326c31f19b78886939a634a5aedcaa5ab8b9b951a1167595d147db",
}
# Every file `make weights` brings, in the order it fetches them.
HUB_FILES = (*ALL_FILES, *FACE_FILES)


class Fetch(Protocol):
    """`huggingface_hub.hf_hub_download`'s shape, as far as `download` uses it."""

    def __call__(self, *, repo_id: str, filename: str, local_dir: Path) -> str: ...


def hub_filename(rel: str) -> str:
    """Where a file of WEIGHTS_DIR sits in the hub repository."""
    return rel if rel.startswith("insightface/") else f"{REPO_FOLDER}/{rel}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_ok(dest: Path, rel: str, sha256: Mapping[str, str] = SHA256) -> bool:
    target = dest / rel
    return target.is_file() and sha256_of(target) == sha256[rel]


def weights_complete(dest: Path, sha256: Mapping[str, str] = SHA256) -> bool:
    """True when all eight official files are present with the right hash."""
    return all(file_ok(dest, rel, sha256) for rel in HUB_FILES)


def _hf_hub_download(*, repo_id: str, filename: str, local_dir: Path) -> str:
    from huggingface_hub import hf_hub_download

    # HF_ENDPOINT read now rather than when huggingface_hub was first imported (a mirror, the tests).
    endpoint = os.environ.get("HF_ENDPOINT") or None
    return hf_hub_download(repo_id=repo_id, filename=filename, local_dir=local_dir, endpoint=endpoint)


def download(
    dest: Path,
    *,
    repo_id: str = REPO_ID,
    fetch: Fetch = _hf_hub_download,
    sha256: Mapping[str, str] = SHA256,
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
            print(f"fetching {name} from {repo_id}", flush=True)
            fetched = Path(fetch(repo_id=repo_id, filename=name, local_dir=staging))
            got = sha256_of(fetched)
            if got != sha256[rel]:
                fetched.unlink(missing_ok=True)
                raise RuntimeError(f"{rel}: sha256 {got} does not match the published {sha256[rel]}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(fetched), target)
            fetched_files.append(rel)
            print(f"verified {rel}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return fetched_files


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_if_missing(
    dest: Path,
    *,
    reachable: Callable[[], bool] = hub_reachable,
    fetch: Fetch = _hf_hub_download,
    sha256: Mapping[str, str] = SHA256,
) -> int:
    """What `make run` does before it starts a worker: use what is there, and fetch only the files
    that are missing when the hub answers. Without the checkpoints the service still runs (requests
    fail with a clear error), and without the face models it uses the dlib fallback, so only a
    failed download is an error."""
    missing = [rel for rel in HUB_FILES if not (dest / rel).is_file()]
    if not missing:
        if weights_complete(dest, sha256):
            print(f"weights: {dest} is complete")
        else:
            # e.g. fine-tuned or stand-in files: the loaders still check every key, shape and input
            print(f"weights: {dest} holds files other than the official release; using them")
        return 0
    face_only = all(rel in FACE_FILES for rel in missing)
    if face_only:
        consequence = "the worker uses the dlib fallback to find faces until they are there"
    else:
        consequence = "requests fail with 'model weights not installed' until they are there"
    if not reachable():
        print(f"weights: {len(missing)} file(s) missing in {dest} and the hub is unreachable;")
        print(f"          {consequence} (`make weights`)")
        return 0
    print(f"weights: fetching {len(missing)} missing file(s) into {dest} (make weights)", flush=True)
    try:
        download(dest, fetch=fetch, sha256=sha256, only_missing=True)
    except Exception as exc:  # network errors come in many types; report one line
        print(f"weights: download failed ({exc});")
        print(f"          {consequence}")
        return 1
    return 0


def check(dest: Path, sha256: Mapping[str, str] = SHA256) -> int:
    """`--check`: one line per file that is not right, then `complete` or `incomplete`."""
    complete = True
    for rel in HUB_FILES:
        if not (dest / rel).is_file():
            print(f"missing  {rel}")
            complete = False
        elif not file_ok(dest, rel, sha256):
            print(f"differs  {rel}")
            complete = False
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
