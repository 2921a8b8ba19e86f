"""Who a webhook says it is for, and the Standard Webhooks signature, over real HTTP.

One service of its own (own database and queues): an API in keys mode and one with AUTH_MODE=off
over the same database, WEBHOOK_STANDARD_SECRET and WEBHOOK_USER_ID set on every process, a
webhook dispatcher as a real Celery worker and no edit worker at all, so that a request submitted
with X-Fal-Request-Timeout times out in the queue (the reconciler expires it) and a cancelled one
completes in the queue, neither running the engine. A real receiver on 127.0.0.1 checks each
delivery with the standardwebhooks package from PyPI and with fal's Ed25519 scheme.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from stack.servers import LocalStack
from tests.support.harness import APP, QUEUE_BASE, Service, base_env
from tests.support.key_commands import new_key
from tests.support.processes import start_worker
from tests.support.webhook_receiver import Receiver, signature_valid
from webhooks.standard_signing import sign, standard_headers

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
USER_ID = "self-hosted-user"
STATIC_KEY = "static-hooks:static-secret"
IN_QUEUE_TIMEOUT = {"X-Fal-Request-Timeout": "0.5"}
PAYLOAD = {"image_url": "https://example.com/a.jpg"}


@dataclasses.dataclass(frozen=True)
class Hooks:
    env: dict[str, str]
    keyed: str  # base URL of the AUTH_MODE=keys API
    open: str  # base URL of the AUTH_MODE=off API
    auth: dict[str, str]  # a key made with `python -m api.keys`
    key_id: str


@pytest.fixture(scope="module")
def hooks(local_stack: LocalStack, tiny_weights: Path, logs_dir: Path) -> Iterator[Hooks]:
    env = base_env(
        local_stack,
        tiny_weights,
        AUTH_MODE="keys",
        API_KEYS=STATIC_KEY,
        WEBHOOK_STANDARD_SECRET=SECRET,
        WEBHOOK_USER_ID=USER_ID,
        WEBHOOK_RETRY_SCHEDULE="0.2,0.2,0.2",
        WEBHOOK_TIMEOUT_S="2",
    )
    svc = Service(env, logs_dir / "webhook-identity")
    svc.logs.mkdir(exist_ok=True)
    try:
        keyed = svc.api("identity-keyed-api")
        open_base = svc.api("identity-open-api", AUTH_MODE="off")
        queue = f"{env['QUEUE_NAME']}.webhooks"
        svc.children["identity-dispatcher"] = start_worker(
            env, svc.logs, "identity-dispatcher", queue, "-P", "threads", "--concurrency", "4"
        )
        auth = new_key(env, "webhook-identity")
        key_id = auth["Authorization"].removeprefix("Key ").split(":")[0]
        yield Hooks(env, keyed, open_base, auth, key_id)
    finally:
        svc.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


def _submit(base: str, hook: str, headers: dict[str, str]) -> str:
    response = httpx.post(f"{base}/{APP}", json=PAYLOAD, params={"fal_webhook": hook}, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def _jwks(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/.well-known/jwks.json")
    assert response.status_code == 200
    return dict(response.json())


def _standard_verify(body: bytes, headers: dict[str, str]) -> Any:
    return Webhook(SECRET).verify(body, headers)


def _one_byte_changed(body: bytes) -> bytes:
    # Still valid UTF-8, so the library reaches its signature check (it decodes the body first).
    at = body.index(b'"ERROR"') + 1
    return body[:at] + b"e" + body[at + 1 :]


def test_standard_webhooks_verify_real_deliveries(hooks: Hooks, receiver: Receiver) -> None:
    path = f"/hook/{uuid.uuid4().hex}"
    receiver.plan(path, [500])  # then 200: the second attempt is accepted
    request_id = _submit(hooks.keyed, receiver.url(path), {**hooks.auth, **IN_QUEUE_TIMEOUT})
    receiver.wait_for(path, accepted=True, timeout=40)
    attempts = receiver.received(path)
    assert [r.answered for r in attempts] == [500, 200]
    jwks = _jwks(hooks.keyed)

    for got in attempts:
        assert _standard_verify(got.body, got.headers) == json.loads(got.body)
        assert got.headers["webhook-timestamp"] == got.headers["x-fal-webhook-timestamp"]
        assert got.headers["webhook-signature"].startswith("v1,")
        # fal's Ed25519 headers stay, and verify.
        assert signature_valid(got, jwks)
        with pytest.raises(WebhookVerificationError):
            _standard_verify(_one_byte_changed(got.body), got.headers)
        # Not a replay of another attempt's signature under this one's timestamp either.
        older = {**got.headers, "webhook-timestamp": str(int(got.headers["webhook-timestamp"]) - 1)}
        with pytest.raises(WebhookVerificationError):
            _standard_verify(got.body, older)
    # webhook-id is the delivery id: the same on every attempt, for receivers to deduplicate.
    delivery_id = attempts[0].headers["x-fal-webhook-delivery-id"]
    assert {r.headers["webhook-id"] for r in attempts} == {delivery_id}

    body = json.loads(attempts[-1].body)
    assert body["request_id"] == request_id and body["status"] == "ERROR"
    assert body["payload"]["error_type"] == "request_timeout"
    # It timed out in the queue, on the caller's X-Fal-Request-Timeout.
    assert {r.headers["x-fal-request-timeout-type"] for r in attempts} == {"user"}

    # A redelivery keeps the id too.
    redeliver = httpx.post(f"{hooks.keyed}/webhooks/requests/{request_id}/redeliver", headers=hooks.auth)
    assert redeliver.status_code == 202, redeliver.text
    receiver.wait_for(path, accepted=True, count=2, timeout=40)
    again = receiver.accepted(path)[-1]
    assert again.headers["webhook-id"] == delivery_id and again.headers["x-fal-webhook-attempt"] == "3"
    assert _standard_verify(again.body, again.headers) == body


def test_user_id_is_the_submitting_key(hooks: Hooks, receiver: Receiver) -> None:
    made, static = f"/hook/{uuid.uuid4().hex}", f"/hook/{uuid.uuid4().hex}"
    _submit(hooks.keyed, receiver.url(made), {**hooks.auth, **IN_QUEUE_TIMEOUT})
    _submit(hooks.keyed, receiver.url(static), {"Authorization": f"Key {STATIC_KEY}", **IN_QUEUE_TIMEOUT})
    receiver.wait_for(made, accepted=True, timeout=40)
    receiver.wait_for(static, accepted=True, timeout=40)
    jwks = _jwks(hooks.keyed)

    for path, key_id in ((made, hooks.key_id), (static, "static-hooks")):
        got = receiver.accepted(path)[0]
        assert got.headers["x-fal-webhook-user-id"] == key_id
        assert signature_valid(got, jwks)
        # The key id is what was signed: claiming WEBHOOK_USER_ID instead does not verify.
        claimed_other = {**got.headers, "x-fal-webhook-user-id": USER_ID}
        assert not signature_valid(dataclasses.replace(got, headers=claimed_other), jwks)
        _standard_verify(got.body, got.headers)


def test_auth_off_keeps_webhook_user_id(hooks: Hooks, receiver: Receiver) -> None:
    path = f"/hook/{uuid.uuid4().hex}"
    _submit(hooks.open, receiver.url(path), IN_QUEUE_TIMEOUT)
    receiver.wait_for(path, accepted=True, timeout=40)
    got = receiver.accepted(path)[0]
    assert got.headers["x-fal-webhook-user-id"] == USER_ID
    assert signature_valid(got, _jwks(hooks.open))
    _standard_verify(got.body, got.headers)


def test_cancelled_in_queue_has_no_timeout_type(hooks: Hooks, receiver: Receiver) -> None:
    path = f"/hook/{uuid.uuid4().hex}"
    request_id = _submit(hooks.keyed, receiver.url(path), hooks.auth)
    cancel = httpx.put(f"{hooks.keyed}/{QUEUE_BASE}/requests/{request_id}/cancel", headers=hooks.auth)
    assert cancel.status_code == 202, cancel.text
    receiver.wait_for(path, accepted=True, timeout=40)
    got = receiver.accepted(path)[0]
    assert json.loads(got.body)["payload"]["error_type"] == "client_cancelled"
    assert "x-fal-request-timeout-type" not in got.headers
    assert got.headers["x-fal-webhook-user-id"] == hooks.key_id
    _standard_verify(got.body, got.headers)


def test_signature_matches_an_independent_hmac() -> None:
    key = bytes(range(32))
    message_id, timestamp = "6d0f3c2e-8a43-4f7b-9a55-0c1b8d2e4f60", 1_700_000_000
    body = '{"status":"OK","payload":{"name":"ü"}}'.encode()
    content = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    expected = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert sign(key, message_id, timestamp, body) == expected
    assert standard_headers(key, message_id=message_id, timestamp=timestamp, body=body) == {
        "webhook-id": message_id,
        "webhook-timestamp": "1700000000",
        "webhook-signature": expected,
    }


def test_signature_matches_the_published_example() -> None:
    # The example of the Standard Webhooks reference libraries' tests.
    secret = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    # And the library agrees with it.
    library = Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", datetime.fromtimestamp(1614265330, tz=UTC), '{"test": 2432232314}'
    )
    assert library == signature
