"""Model weights kept in object storage: `WEIGHTS_S3_URI=s3://bucket/prefix` holds the official
`liveportrait/` folder's files; each worker copies them into its local `WEIGHTS_DIR` before loading.

GPU hosts then need no HuggingFace access and no shared volume: upload the folder once
(`aws s3 sync weights/ s3://bucket/liveportrait/`) and every worker fetches it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from worker.liveportrait.errors import WeightsError
from worker.liveportrait.face_files import FACE_FILES
from worker.liveportrait.weights import ALL_FILES


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise WeightsError(f"WEIGHTS_S3_URI must look like s3://bucket/prefix, got {uri!r}")
    return parts.netloc, parts.path.strip("/")


def sync_from_s3(uri: str, dest: Path, client: Any) -> list[str]:
    """Download the checkpoint files that `dest` lacks (or holds at another size); returns them.
    The face pipeline's ONNX files are fetched when the bucket has them: a bucket filled before
    they existed still serves the worker (on the dlib fallback)."""
    bucket, prefix = parse_s3_uri(uri)
    fetched = []
    for rel in (*ALL_FILES, *FACE_FILES):
        key = f"{prefix}/{rel}" if prefix else rel
        target = dest / rel
        try:
            size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
            if target.is_file() and target.stat().st_size == size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            client.download_file(bucket, key, str(partial))
            os.replace(partial, target)  # a crash never leaves a truncated checkpoint in place
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"404", "NoSuchKey", "NotFound"}:
                if rel in FACE_FILES:
                    continue
                raise WeightsError(
                    f"model weights not installed: s3://{bucket}/{key} does not exist"
                ) from exc
            raise WeightsError(f"cannot fetch s3://{bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise WeightsError(f"cannot fetch s3://{bucket}/{key}: {exc}") from exc
        fetched.append(rel)
    return fetched
