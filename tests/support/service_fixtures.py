"""Session fixtures of every test package that runs the service: its settings over the real
PostgreSQL, Redis and S3 (the local_stack fixture), the API under uvicorn and Celery workers as
child processes, tiny weights, and a small HTTP server of test images.

A pytest plugin (tests/conftest.py lists it in pytest_plugins), so that every package sees the
same session servers and processes; a fixture only one package uses stays in its conftest."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.servers import LocalStack
from tests.support.databases import reconciler_paused
from tests.support.image_server import ImageServer, serve_images
from tests.support.images import face_jpeg, huge_png, noise_png
from tests.support.limits import MAX_INPUT_BYTES, MAX_INPUT_PIXELS, UPLOAD_MAX_BYTES
from tests.support.processes import Child, start_api, start_worker


@pytest.fixture(scope="session")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    root = tmp_path_factory.mktemp("images")
    (root / "face.jpg").write_bytes(face_jpeg())
    (root / "noise.png").write_bytes(noise_png())
    (root / "not-an-image.txt").write_bytes(b"hello, this is text\n" * 10)
    (root / "too-big.jpg").write_bytes(os.urandom(MAX_INPUT_BYTES + 1))
    (root / "huge.png").write_bytes(huge_png())
    redirects = {
        "/redirect-private": "http://10.0.0.1/face.jpg",
        "/redirect-face": "/face.jpg",
    }
    with serve_images(root, redirects) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.liveportrait.testing import write_random_weights

    return write_random_weights(tmp_path_factory.mktemp("weights"), arch="tiny")


@pytest.fixture(scope="session")
def service_env(local_stack: LocalStack, tiny_weights: Path) -> Iterator[dict[str, str]]:
    """Settings shared by this process and every child; also applied to os.environ here."""
    from tests.support.settings_reset import reset_cached_settings

    tag = uuid.uuid4().hex[:8]
    env = {
        "DATABASE_URL": local_stack.database_url,
        "REDIS_URL": local_stack.redis_url,
        "S3_ENDPOINT_URL": local_stack.s3_endpoint_url,
        "S3_ACCESS_KEY": local_stack.s3_access_key,
        "S3_SECRET_KEY": local_stack.s3_secret_key,
        "S3_REGION": local_stack.s3_region,
        "S3_BUCKET": f"pq-test-{tag}",
        "QUEUE_NAME": f"pqtest{tag}",
        "WEIGHTS_DIR": str(tiny_weights),
        "ENGINE_ARCH": "tiny",
        "DEVICE": "cpu",
        "TORCH_THREADS": "1",
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.0/8",
        "MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
        "MAX_INPUT_PIXELS": str(MAX_INPUT_PIXELS),
        "FETCH_TIMEOUT_S": "5",
        "RECONCILE_INTERVAL_S": "1",
        "PUBLIC_BASE_URL": "",
        # The suite predates API keys: one local user; tests/faults/test_auth.py covers keys.
        "AUTH_MODE": "off",
        # Room for a two-part multipart upload (S3 parts are at least 5 MiB) but small enough that
        # the size limit is cheap to hit.
        "UPLOAD_MAX_BYTES": str(UPLOAD_MAX_BYTES),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    reset_cached_settings()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_cached_settings()


@pytest.fixture(scope="session")
def migrated(service_env: dict[str, str]) -> dict[str, str]:
    from core.migrate import upgrade

    upgrade(service_env["DATABASE_URL"])
    return service_env


@pytest.fixture
def paused_reconciler(migrated: dict[str, str]) -> Iterator[None]:
    """The session's API servers (whose reconciler loops run every second) do not requeue,
    publish, fail or sweep the rows a test puts in an odd state by hand while it runs."""
    with reconciler_paused():
        yield


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def _queues(env: dict[str, str]) -> str:
    return f"{env['QUEUE_NAME']}.normal,{env['QUEUE_NAME']}.low"


@pytest.fixture(scope="session")
def workers(migrated: dict[str, str], logs_dir: Path) -> Iterator[list[Child]]:
    """Two Celery workers (one process each) sharing the queues, as two GPU machines would."""
    started: list[Child] = []
    try:
        for name in ("worker-a", "worker-b"):
            started.append(start_worker(migrated, logs_dir, name, _queues(migrated)))
        yield started
    finally:
        for child in started:
            child.stop()


@pytest.fixture(scope="session")
def api(migrated: dict[str, str], logs_dir: Path) -> Iterator[str]:
    child, base = start_api(migrated, logs_dir)
    yield base
    child.stop()
