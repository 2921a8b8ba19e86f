"""fal_webhook end to end: the API under uvicorn, GPU workers and the webhook dispatcher as real
Celery worker processes, a real receiver on 127.0.0.1, PostgreSQL, Redis and S3 all real.

The dispatcher runs with a short schedule (0.2 s waits, 4 attempts) and a 0.5 s timeout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from core.migrate import downgrade, upgrade
from core.webhook_outbox import LOST_ATTEMPT, Completion, build_body
from tests.support.client_helpers import APP, QUEUE_BASE
from tests.support.databases import empty_database
from tests.support.image_server import ImageServer
from tests.support.processes import Child, start_api, start_worker
from tests.support.webhook_receiver import Hang, Receiver, signature_valid

pytestmark = pytest.mark.usefixtures("workers")

KEY = "hooks:secret"
AUTH = {"Authorization": f"Key {KEY}"}
# A request that fails at once (it may not start after 1 ms), without running the engine.
FAST_FAIL = {"X-Fal-Request-Timeout": "0.001"}


class Dispatcher:
    """The webhook dispatcher worker process, which a test may kill and start again."""

    def __init__(self, env: dict[str, str], logs_dir: Path) -> None:
        self._env = env
        self._logs_dir = logs_dir
        self._starts = 0
        self.child = self.start()

    def start(self) -> Child:
        self._starts += 1
        name = f"dispatcher-{self._starts}"
        queue = f"{self._env['QUEUE_NAME']}.webhooks"
        self.child = start_worker(
            self._env, self._logs_dir, name, queue, "-P", "threads", "--concurrency", "4"
        )
        return self.child

    def kill(self) -> None:
        os.killpg(self.child.proc.pid, signal.SIGKILL)
        self.child.proc.wait(10)


@pytest.fixture(scope="module")
def hook_env(migrated: dict[str, str]) -> dict[str, str]:
    return {
        **migrated,
        "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2",
        "WEBHOOK_TIMEOUT_S": "0.5",
        "AUTH_MODE": "keys",
        "API_KEYS": KEY,
        "RECONCILE_INTERVAL_S": "1",
    }


@pytest.fixture(scope="module")
def hook_api(hook_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    child, base = start_api(hook_env, logs_dir, name="webhook-api")
    yield base
    child.stop()


@pytest.fixture(scope="module")
def dispatcher(hook_env: dict[str, str], logs_dir: Path) -> Iterator[Dispatcher]:
    holder = Dispatcher(hook_env, logs_dir)
    yield holder
    holder.child.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


def _path() -> str:
    return f"/hook/{uuid.uuid4().hex}"


def _submit(api: str, payload: dict[str, Any], hook: str, headers: dict[str, str] | None = None) -> str:
    response = httpx.post(
        f"{api}/{APP}", json=payload, params={"fal_webhook": hook}, headers={**AUTH, **(headers or {})}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def _deliveries(api: str, request_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{api}/webhooks/requests/{request_id}/deliveries", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == request_id
    return list(body["deliveries"])


def _wait_state(api: str, request_id: str, state: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = _deliveries(api, request_id)
        if deliveries and deliveries[-1]["state"] == state:
            return deliveries[-1]
        time.sleep(0.2)
    raise AssertionError(f"delivery of {request_id} not {state}: {_deliveries(api, request_id)}")


def _result(api: str, request_id: str) -> httpx.Response:
    return httpx.get(f"{api}/{QUEUE_BASE}/requests/{request_id}", headers=AUTH)


def _jwks(api: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/.well-known/jwks.json")
    assert response.status_code == 200
    return dict(response.json())


@pytest.mark.usefixtures("dispatcher")
def test_delivered_on_success_and_on_failure(
    hook_api: str, receiver: Receiver, image_server: ImageServer
) -> None:
    ok_path, bad_path = _path(), _path()
    ok_id = _submit(
        hook_api, {"image_url": image_server.url("face.jpg"), "flag_do_crop": False}, receiver.url(ok_path)
    )
    bad_id = _submit(hook_api, {"image_url": image_server.url("not-an-image.txt")}, receiver.url(bad_path))
    receiver.wait_for(ok_path, accepted=True)
    receiver.wait_for(bad_path, accepted=True)
    jwks = _jwks(hook_api)

    ok = receiver.accepted(ok_path)[0]
    assert signature_valid(ok, jwks)
    body = json.loads(ok.body)
    assert body == {
        "request_id": ok_id,
        "gateway_request_id": ok_id,
        "status": "OK",
        "payload": _result(hook_api, ok_id).json(),
        "error": None,
        "payload_error": None,
    }
    assert body["payload"]["image"]["content_type"] == "image/jpeg"
    assert ok.headers["x-fal-webhook-request-id"] == ok_id
    # The submitting key's id (API_KEYS' "hooks:secret" here).
    assert ok.headers["x-fal-webhook-user-id"] == "hooks"
    assert ok.headers["content-type"] == "application/json"
    # No WEBHOOK_STANDARD_SECRET: no Standard Webhooks headers; and no timeout type on a success.
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & ok.headers.keys()
    assert "x-fal-request-timeout-type" not in ok.headers

    bad = receiver.accepted(bad_path)[0]
    assert signature_valid(bad, jwks)
    body = json.loads(bad.body)
    failed = _result(hook_api, bad_id)
    assert failed.status_code == 422
    assert body["status"] == "ERROR" and body["request_id"] == bad_id
    assert body["payload"] == failed.json() and body["error"] == "Invalid status code: 422"

    delivery = _deliveries(hook_api, ok_id)[0]
    assert delivery["state"] == "delivered" and delivery["attempts"] == 1
    assert delivery["id"] == ok.headers["x-fal-webhook-delivery-id"]
    assert delivery["attempt_log"][0]["status_code"] == 200
    # A forged body does not verify.
    forged = dataclasses.replace(ok, body=ok.body.replace(b'"OK"', b'"ERROR"'))
    assert not signature_valid(forged, jwks)


@pytest.mark.usefixtures("dispatcher")
def test_failing_receiver_gets_exactly_one_accepted_delivery(hook_api: str, receiver: Receiver) -> None:
    path = _path()
    receiver.plan(path, [500, 302, 503])
    request_id = _submit(hook_api, {"image_url": "https://example.com/a.jpg"}, receiver.url(path), FAST_FAIL)
    receiver.wait_for(path, accepted=True, timeout=30)
    delivery = _wait_state(hook_api, request_id, "delivered")
    time.sleep(1.0)  # nothing more may arrive

    got = receiver.received(path)
    assert [r.answered for r in got] == [500, 302, 503, 200]
    assert len(receiver.accepted(path)) == 1
    jwks = _jwks(hook_api)
    assert all(signature_valid(r, jwks) for r in got)
    # Receivers can deduplicate: same delivery id, request id and body on every attempt.
    assert {r.headers["x-fal-webhook-delivery-id"] for r in got} == {delivery["id"]}
    assert {r.headers["x-fal-webhook-request-id"] for r in got} == {request_id}
    assert len({r.body for r in got}) == 1
    assert [r.headers["x-fal-webhook-attempt"] for r in got] == ["1", "2", "3", "4"]
    assert json.loads(got[0].body)["payload"]["error_type"] == "request_timeout"
    # It never started within the caller's X-Fal-Request-Timeout: every attempt says so.
    assert {r.headers["x-fal-request-timeout-type"] for r in got} == {"user"}

    log = delivery["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 302, 503, 200]
    assert "redirects are not followed" in log[1]["error"] and log[3]["error"] is None


@pytest.mark.usefixtures("dispatcher")
def test_exhausted_schedule_fails_then_redeliver(hook_api: str, receiver: Receiver) -> None:
    path = _path()
    receiver.plan(path, [], then=Hang(1.5))
    request_id = _submit(hook_api, {"image_url": "https://example.com/a.jpg"}, receiver.url(path), FAST_FAIL)
    delivery = _wait_state(hook_api, request_id, "failed")
    assert delivery["attempts"] == 4 and delivery["next_attempt_at"] is None
    assert all("timed out" in a["error"] for a in delivery["attempt_log"])
    assert len(receiver.received(path)) == 4

    redeliver = f"{hook_api}/webhooks/requests/{request_id}/redeliver"
    assert httpx.post(redeliver).status_code == 401
    assert httpx.get(f"{hook_api}/webhooks/requests/{request_id}/deliveries").status_code == 401
    receiver.plan(path, [], then=200)
    response = httpx.post(redeliver, headers=AUTH)
    assert response.status_code == 202, response.text
    receiver.wait_for(path, accepted=True, timeout=30)
    again = _wait_state(hook_api, request_id, "delivered")
    assert again["id"] == delivery["id"] and again["attempts"] == 5
    assert receiver.accepted(path)[0].headers["x-fal-webhook-delivery-id"] == delivery["id"]

    unknown = uuid.uuid4()
    assert httpx.post(f"{hook_api}/webhooks/requests/{unknown}/redeliver", headers=AUTH).status_code == 404
    assert httpx.get(f"{hook_api}/webhooks/requests/{unknown}/deliveries", headers=AUTH).status_code == 404


def test_dispatcher_killed_mid_delivery_loses_nothing(
    hook_api: str, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    path = _path()
    receiver.plan(path, [Hang(3.0)], then=200)
    request_id = _submit(hook_api, {"image_url": "https://example.com/a.jpg"}, receiver.url(path), FAST_FAIL)
    receiver.wait_for(path, timeout=30)
    dispatcher.kill()  # while the first attempt waits for its answer
    assert _deliveries(hook_api, request_id)[0]["state"] == "pending"
    dispatcher.start()

    # The lease of the lost attempt runs out, the sweep republishes, the new dispatcher sends.
    receiver.wait_for(path, accepted=True, timeout=40)
    delivery = _wait_state(hook_api, request_id, "delivered")
    assert len(receiver.accepted(path)) == 1
    assert [a["error"] for a in delivery["attempt_log"]] == [LOST_ATTEMPT, None]


def test_private_webhook_refused_at_submit(hook_api: str) -> None:
    too_long = "https://example.com/" + "h" * 2100  # the row stays small: at most 2,048 characters
    for hook in (
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest",
        "http://[::1]:8080/x",
        "ftp://a/b",
        too_long,
    ):
        response = httpx.post(
            f"{hook_api}/{APP}",
            json={"image_url": "https://example.com/a.jpg"},
            params={"fal_webhook": hook},
            headers=AUTH,
        )
        assert response.status_code == 422, hook
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["query", "fal_webhook"], detail


def test_private_address_refused_at_delivery() -> None:
    from webhooks.sender import post

    outcome = post("http://10.0.0.1/hook", b"{}", {}, timeout_s=0.5, allowed=[])
    assert outcome.status_code is None and not outcome.accepted
    assert (
        outcome.error
        == "refused: fal_webhook resolves to a non-public address (10.0.0.1), which is not allowed"
    )


def test_unserializable_payload_is_reported() -> None:
    done = Completion(uuid.uuid4(), "http://x", {"bad": {1, 2}}, None, None, None)
    body = json.loads(build_body(done))
    assert body["status"] == "OK" and body["payload"] is None and "JSON" in body["payload_error"]


def test_key_rotation_keeps_old_key_for_grace(hook_api: str, hook_env: dict[str, str]) -> None:
    before = [key["kid"] for key in _jwks(hook_api)["keys"]]
    assert len(before) >= 1
    out = subprocess.run(
        [sys.executable, "-m", "webhooks.keys", "rotate"],
        env={**os.environ, **hook_env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    new_kid = out.strip().rsplit(" ", 1)[-1]
    after = [key["kid"] for key in _jwks(hook_api)["keys"]]
    assert after[0] == new_kid and before[0] in after

    from core.config import get_settings
    from core.db import session_scope
    from webhooks.keys import published_keys

    no_grace = get_settings().model_copy(update={"webhook_key_grace_s": 0})
    with session_scope() as session:
        assert [kid for kid, _ in published_keys(session, no_grace)] == [new_kid]


def test_migration_steps(migrated: dict[str, str]) -> None:
    """0001 -> head adds the webhook tables; head -> 0001 removes only them."""
    hooks = {"webhook_deliveries", "webhook_attempts", "webhook_signing_keys"}
    with empty_database(migrated["DATABASE_URL"], "migrations") as scratch_url:
        scratch = create_engine(scratch_url)
        try:
            upgrade(scratch_url, "0001")
            assert not hooks & set(inspect(scratch).get_table_names())
            upgrade(scratch_url)
            assert hooks <= set(inspect(scratch).get_table_names())
            downgrade(scratch_url, "0001")
            tables = set(inspect(scratch).get_table_names())
            assert "requests" in tables and not hooks & tables
        finally:
            scratch.dispose()


def test_signing_key_setting_formats() -> None:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from webhooks.keys import kid_for, parse_private_key, raw_private, raw_public

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    seed = raw_private(key)
    kids = {
        kid_for(raw_public(parse_private_key(value)))
        for value in (
            pem,
            base64.b64encode(seed).decode(),
            base64.urlsafe_b64encode(seed).decode().rstrip("="),
        )
    }
    assert kids == {kid_for(raw_public(key))}
    with pytest.raises(ValueError):
        parse_private_key(base64.b64encode(b"short").decode())
