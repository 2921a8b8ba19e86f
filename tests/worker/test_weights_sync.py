"""Weights held in object storage (WEIGHTS_S3_URI) are copied next to the worker and loaded."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import Config

from stack.servers import LocalStack
from worker.liveportrait.engine import Engine
from worker.liveportrait.errors import WeightsError
from worker.liveportrait.face_files import FACE_FILES
from worker.liveportrait.face_standins import write_face_standins
from worker.liveportrait.weights import ALL_FILES
from worker.weights_sync import parse_s3_uri, sync_from_s3


@pytest.fixture(scope="module")
def client(local_stack: LocalStack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=local_stack.s3_endpoint_url,
        aws_access_key_id=local_stack.s3_access_key,
        aws_secret_access_key=local_stack.s3_secret_key,
        region_name=local_stack.s3_region,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def bucket(client: Any, tiny_weights: Path) -> str:
    name = f"weights-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    for rel in ALL_FILES:
        client.upload_file(str(tiny_weights / rel), name, f"models/liveportrait/{rel}")
    return name


def test_sync_then_load(client: Any, bucket: str, tiny_weights: Path, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/models/liveportrait/"
    fetched = sync_from_s3(uri, tmp_path, client)
    assert fetched == list(ALL_FILES)
    for rel in ALL_FILES:
        assert (tmp_path / rel).read_bytes() == (tiny_weights / rel).read_bytes()
    assert sync_from_s3(uri, tmp_path, client) == []  # already there: nothing downloaded again
    engine = Engine.load(tmp_path, arch="tiny", device="cpu")
    assert engine.device.type == "cpu"


def test_missing_object_is_named(client: Any, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        sync_from_s3(f"s3://{bucket}/elsewhere", tmp_path, client)


def test_uri_must_be_s3() -> None:
    assert parse_s3_uri("s3://b/x/y/") == ("b", "x/y")
    with pytest.raises(WeightsError):
        parse_s3_uri("https://example.com/weights")


def test_face_models_follow_when_the_bucket_has_them(client: Any, tiny_weights: Path, tmp_path: Path) -> None:
    name = f"weights-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    onnx_dir = tmp_path / "standins"
    write_face_standins(onnx_dir, seed=3)
    for rel in ALL_FILES:
        client.upload_file(str(tiny_weights / rel), name, f"lp/{rel}")
    for rel in FACE_FILES:
        client.upload_file(str(onnx_dir / rel), name, f"lp/{rel}")
    dest = tmp_path / "dest"
    assert sync_from_s3(f"s3://{name}/lp", dest, client) == [*ALL_FILES, *FACE_FILES]
    assert Engine.load(dest, arch="tiny", device="cpu").faces.name == "official"
