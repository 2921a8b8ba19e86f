"""Large data-URI inputs go to the bucket at submit and the row keeps a small reference.

Real servers throughout: an API and a worker of this module's own (a larger MAX_INPUT_BYTES
than the session's, and a bucket of its own, so that inputs/ holds only what these tests
stored), and an API with keys and a one-request in-flight limit whose queue no worker reads
until a test starts one.
"""

from __future__ import annotations

import base64
import io
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import text

from core.config import get_settings
from core.db import session_scope
from storage.layout import INPUT_REF_PREFIX, key_of_ref
from storage.s3 import s3_client
from tests.support.client_helpers import APP, QUEUE_BASE, result, submit, wait_completed
from tests.support.images import noise_png
from tests.support.keyed_api import new_key
from tests.support.processes import start_api, start_worker

MAX_INPUT_BYTES = 8_000_000
ROW_LIMIT = 8 * 1024
NO_CROP = {"flag_do_crop": False, "output_format": "png"}


@pytest.fixture(scope="module")
def inputs_env(migrated: dict[str, str]) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        **migrated,
        "MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
        "S3_BUCKET": f"pq-inputs-{tag}",
        "QUEUE_NAME": f"pqinputs{tag}",
    }


@pytest.fixture(scope="module")
def inputs_api(inputs_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    queues = f"{inputs_env['QUEUE_NAME']}.normal,{inputs_env['QUEUE_NAME']}.low"
    worker = start_worker(inputs_env, logs_dir, "inputs-worker", queues)
    child, base = start_api(inputs_env, logs_dir, name="inputs-api")
    yield base
    child.stop()
    worker.stop()


@pytest.fixture(scope="module")
def limited_env(inputs_env: dict[str, str]) -> dict[str, str]:
    return {
        **inputs_env,
        "QUEUE_NAME": inputs_env["QUEUE_NAME"] + "idle",
        "AUTH_MODE": "keys",
        "KEY_MAX_IN_FLIGHT": "1",
        "RECONCILE_INTERVAL_S": "0",
    }


@pytest.fixture(scope="module")
def limited_api(limited_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    child, base = start_api(limited_env, logs_dir, name="inputs-limited-api")
    yield base
    child.stop()


def big_png(side: int = 1000) -> bytes:
    """Noise: PNG cannot shrink it, so the URI is as large as its pixels (about 4 MB here)."""
    return noise_png(size=side, seed=7)


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def row_of(request_id: str) -> dict[str, Any]:
    with session_scope() as session:
        found = session.execute(
            text(
                "SELECT pg_column_size(r.*) AS row_bytes, pg_column_size(input) AS input_bytes,"
                " input->>'image_url' AS image_url FROM requests r WHERE id = :id"
            ),
            {"id": uuid.UUID(request_id)},
        ).first()
    assert found is not None, request_id
    return dict(found._mapping)


def stored_key(image_url: str, request_id: str) -> str:
    """The object a row's stored-input reference names: under the request's id, with a name
    nobody can guess from the id."""
    key = key_of_ref(image_url)
    assert key is not None and key.startswith(f"inputs/{request_id}/"), image_url
    assert len(key.rsplit("/", 1)[1]) >= 12
    return key


def stored_keys(bucket: str) -> list[str]:
    client = s3_client(get_settings())
    try:
        answer = client.list_objects_v2(Bucket=bucket, Prefix="inputs/")
    except client.exceptions.NoSuchBucket:
        return []
    return sorted(obj["Key"] for obj in answer.get("Contents", []))


def test_large_data_uri_is_stored_and_edited(inputs_api: str, inputs_env: dict[str, str]) -> None:
    image = big_png()
    uri = data_uri(image)
    assert len(uri) > 4_000_000
    request_id = submit(inputs_api, {"image_url": uri, **NO_CROP})["request_id"]

    row = row_of(request_id)
    key = stored_key(row["image_url"], request_id)
    assert row["row_bytes"] < ROW_LIMIT and row["input_bytes"] < 1024, row
    obj = s3_client(get_settings()).get_object(Bucket=inputs_env["S3_BUCKET"], Key=key)
    assert obj["ContentType"] == "image/png" and obj["Body"].read() == image

    done = wait_completed(inputs_api, request_id, timeout=300)
    assert "error" not in done, done
    output = result(inputs_api, request_id).json()["image"]
    data = httpx.get(output["url"], timeout=30).content
    with Image.open(io.BytesIO(data)) as decoded:
        # Without cropping, the whole picture is edited and comes back as the network's 512x512
        # image, as LivePortrait's own image path returns it.
        assert decoded.format == "PNG" and decoded.size == (output["width"], output["height"]) == (512, 512)


def test_sync_run_of_a_large_data_uri(inputs_api: str, inputs_env: dict[str, str]) -> None:
    uri = data_uri(big_png(700), "image/x-whatever;charset=binary")
    response = httpx.post(f"{inputs_api}/run/{APP}", json={"image_url": uri, **NO_CROP}, timeout=300)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-fal-request-id"]
    assert response.json()["image"]["width"] == 512
    key = stored_key(row_of(request_id)["image_url"], request_id)
    head = s3_client(get_settings()).head_object(Bucket=inputs_env["S3_BUCKET"], Key=key)
    assert head["ContentType"] == "image/x-whatever"


def test_small_data_uri_stays_in_the_row(inputs_api: str, inputs_env: dict[str, str]) -> None:
    uri = data_uri(noise_png(size=8))
    assert len(uri) < 2048
    request_id = submit(inputs_api, {"image_url": uri, **NO_CROP})["request_id"]
    assert row_of(request_id)["image_url"] == uri
    assert not [k for k in stored_keys(inputs_env["S3_BUCKET"]) if request_id in k]


def test_bad_data_uris_are_refused_at_submit(inputs_api: str, inputs_env: dict[str, str]) -> None:
    before = stored_keys(inputs_env["S3_BUCKET"])
    cases = {
        "no comma, large": ("data:image/png;base64" + "A" * 5000, "file_download_error", "no comma"),
        "no comma, small": ("data:image/png;base64", "file_download_error", "no comma"),
        "bad base64, large": ("data:image/png;base64," + "A" * 4999, "file_download_error", "invalid base64"),
        "bad base64, small": ("data:image/png;base64,AAAAA", "file_download_error", "invalid base64"),
        "too large": (data_uri(b"\0" * (MAX_INPUT_BYTES + 10)), "image_too_large", "too large"),
    }
    for name, (uri, error_type, words) in cases.items():
        for route in (APP, f"run/{APP}"):
            response = httpx.post(f"{inputs_api}/{route}", json={"image_url": uri}, timeout=60)
            assert response.status_code == 422, (name, route, response.text)
            [detail] = response.json()["detail"]
            assert detail["loc"] == ["body", "image_url"] and detail["type"] == error_type, (name, detail)
            assert words in detail["msg"], (name, detail)
    assert stored_keys(inputs_env["S3_BUCKET"]) == before


def test_long_urls_are_refused(inputs_api: str) -> None:
    url = "https://example.com/" + "a" * 5000
    response = httpx.post(f"{inputs_api}/{APP}", json={"image_url": url}, timeout=30)
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "image_url"] and "too long" in detail["msg"]


def test_a_refused_insert_leaves_no_object(limited_api: str, inputs_env: dict[str, str]) -> None:
    auth = {"Authorization": f"Key {new_key('inputs-limit')}"}
    uri = data_uri(big_png(400))
    first = submit(limited_api, {"image_url": uri}, headers=auth)["request_id"]
    response = httpx.post(f"{limited_api}/{APP}", json={"image_url": uri}, headers=auth, timeout=30)
    assert response.status_code == 429, response.text
    # The refused request's object was written before its insert and deleted after: every
    # object under inputs/ belongs to a row.
    keys = stored_keys(inputs_env["S3_BUCKET"])
    assert [k for k in keys if first in k]
    with session_scope() as session:
        rows = session.execute(text("SELECT input->>'image_url' FROM requests")).scalars().all()
    assert {INPUT_REF_PREFIX + key for key in keys} <= set(rows)


def test_a_missing_stored_input_fails_clearly(
    limited_api: str, limited_env: dict[str, str], logs_dir: Path
) -> None:
    auth = {"Authorization": f"Key {new_key('inputs-missing')}"}
    request_id = submit(limited_api, {"image_url": data_uri(big_png(300))}, headers=auth)["request_id"]
    key = stored_key(row_of(request_id)["image_url"], request_id)
    s3_client(get_settings()).delete_object(Bucket=limited_env["S3_BUCKET"], Key=key)
    queues = f"{limited_env['QUEUE_NAME']}.normal,{limited_env['QUEUE_NAME']}.low"
    worker = start_worker(limited_env, logs_dir, "inputs-late-worker", queues)
    try:
        client = httpx.Client(headers=auth, timeout=30)
        base = f"{limited_api}/{QUEUE_BASE}/requests/{request_id}"
        deadline = time.monotonic() + 120
        while (done := client.get(f"{base}/status").json())["status"] != "COMPLETED":
            assert time.monotonic() < deadline, done
            time.sleep(0.2)
        assert done["error_type"] == "file_download_error", done
        assert "no longer exists" in done["error"], done
        answer = client.get(base)
        assert answer.status_code == 422
        [detail] = answer.json()["detail"]
        assert detail["loc"] == ["body", "image_url"] and "no longer exists" in detail["msg"]
    finally:
        worker.stop()


def test_an_unreachable_object_store_is_503(inputs_env: dict[str, str], logs_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    child, base = start_api(
        {**inputs_env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}, logs_dir, "inputs-no-s3"
    )
    try:
        with session_scope() as session:
            before = session.execute(text("SELECT count(*) FROM requests")).scalar_one()
        response = httpx.post(f"{base}/{APP}", json={"image_url": data_uri(big_png(200))}, timeout=60)
        assert response.status_code == 503, response.text
        assert response.json()["error_type"] == "service_unavailable" and response.headers["retry-after"]
        with session_scope() as session:
            assert session.execute(text("SELECT count(*) FROM requests")).scalar_one() == before
    finally:
        child.stop()
