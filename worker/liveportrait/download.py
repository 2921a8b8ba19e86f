"""`make weights`: fetch the official LivePortrait checkpoints from the HuggingFace hub.

Files land in DEST laid out as the official `liveportrait/` folder and are checked against the
published sha256 sums; a file that is already present and correct is not downloaded again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .weights import ALL_FILES, BASE_FILES, STITCHING_FILE

REPO_ID = "KwaiVGI/LivePortrait"
REPO_FOLDER = "liveportrait"
SHA256 = {
    BASE_FILES[
        "appearance_feature_extractor"
    ]: "5279bb8654293dbdf327030b397f107237dd9212fb11dd75b83dfb635211ceb5",
    BASE_FILES["motion_extractor"]: "251e6a94ad667a1d0c69526d292677165110ef7f0cf0f6d199f0e414e8aa0ca5",
    BASE_FILES["warping_module"]: "2f61a6f265fe344f14132364859a78bdbbc2068577170693da57fb96d636e282",
    BASE_FILES["spade_generator"]: "4780afc7909a9f84e24c01d73b31a555ef651521a1fe3b2429bd04534d992aee",
    STITCHING_FILE: "3652d5a3f95099141a56986aaddec92fadf0a73c87a20fac9a2c07c32b28b611",
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_complete(dest: Path) -> bool:
    """True when every official file is present with the right hash."""
    return all((dest / rel).is_file() and sha256_of(dest / rel) == digest for rel, digest in SHA256.items())


def download(dest: Path, *, repo_id: str = REPO_ID) -> None:
    from huggingface_hub import hf_hub_download

    staging = dest / ".download"
    for rel, digest in SHA256.items():
        target = dest / rel
        if target.is_file() and sha256_of(target) == digest:
            print(f"ok       {rel}")
            continue
        print(f"fetching {rel} from {repo_id}", flush=True)
        fetched = Path(hf_hub_download(repo_id=repo_id, filename=f"{REPO_FOLDER}/{rel}", local_dir=staging))
        got = sha256_of(fetched)
        if got != digest:
            raise RuntimeError(f"{rel}: sha256 {got} does not match the published {digest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(fetched), target)
        print(f"verified {rel}")
    shutil.rmtree(staging, ignore_errors=True)


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname or "", endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_if_missing(dest: Path) -> int:
    """What `make run` does before it starts a worker: use what is there, else fetch when the hub
    answers. Without weights the service still runs (requests fail with a clear error), so only
    a failed download is an error."""
    if weights_complete(dest):
        print(f"weights: {dest} is complete")
        return 0
    if all((dest / rel).is_file() for rel in ALL_FILES):
        # e.g. fine-tuned or stand-in checkpoints: the loader still checks every key and shape
        print(f"weights: {dest} holds checkpoints other than the official release; using them")
        return 0
    if not hub_reachable():
        print(f"weights: missing in {dest} and the hub is unreachable; requests will fail")
        print("          with 'model weights not installed' until `make weights` has run")
        return 0
    print(f"weights: fetching into {dest} (make weights)", flush=True)
    try:
        download(dest)
    except Exception as exc:  # network errors come in many types; report one line
        print(f"weights: download failed ({exc}); the service runs and reports missing weights per request")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", "weights")))
    parser.add_argument(
        "--check", action="store_true", help="only verify what is there; exit 1 if incomplete"
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="keep complete or other checkpoints; fetch only when missing and the hub answers",
    )
    args = parser.parse_args(argv)
    if args.if_missing:
        return fetch_if_missing(args.dest)
    if args.check:
        complete = weights_complete(args.dest)
        print("complete" if complete else "incomplete")
        return 0 if complete else 1
    try:
        download(args.dest)
    except Exception as exc:  # network errors come in many types; report one line
        print(f"error: could not fetch the weights: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
