"""API keys: created, listed and revoked with `python -m api.keys`, stored hashed; bad or revoked
keys are 401; a request is visible only to the key that created it; per-key limits hold across
two API processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from stack.servers import LocalStack
from tests.support.harness import APP, QUEUE_BASE, Service, base_env, pg_url, submit
from tests.support.key_commands import keys_cli, new_key

IN_FLIGHT = 3
PER_MINUTE = 5
STATIC_KEY = "static-id:static-secret"


@pytest.fixture(scope="module")
def apis(
    migrated_stack: LocalStack, fault_weights: Path, fault_logs: Path
) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Two API replicas in keys mode; no worker consumes their queue, so requests stay in flight."""
    env = base_env(
        migrated_stack,
        fault_weights,
        AUTH_MODE="keys",
        API_KEYS=STATIC_KEY,
        KEY_MAX_IN_FLIGHT=str(IN_FLIGHT),
        KEY_MAX_SUBMITS_PER_MINUTE=str(PER_MINUTE),
        RECONCILE_INTERVAL_S="0",
    )
    svc = Service(env, fault_logs / "auth")
    svc.logs.mkdir(exist_ok=True)
    try:
        yield env, [svc.api("auth-api-1"), svc.api("auth-api-2")]
    finally:
        svc.close()


def test_key_lifecycle_and_401s(apis: tuple[dict[str, str], list[str]]) -> None:
    env, (base, _) = apis
    auth = new_key(env, "lifecycle")
    key_id, secret = auth["Authorization"].removeprefix("Key ").split(":")
    listing = keys_cli(env, "list").stdout
    assert key_id in listing and "lifecycle" in listing and secret not in listing
    # Only a hash is stored: the secret appears nowhere in the table.
    with psycopg.connect(pg_url(env)) as conn:
        dump = str(conn.execute("SELECT * FROM api_keys WHERE key_id = %s", (key_id,)).fetchall())
    assert secret not in dump and secret.encode().hex() not in dump

    assert submit(base, headers=auth).status_code == 200
    assert submit(base, headers={"Authorization": f"Key {STATIC_KEY}"}).status_code == 200  # API_KEYS
    for bad in (None, "Key nope", f"Key {key_id}:{'0' * 64}", f"Key {key_id}", "Basic abc", f"Key :{secret}"):
        answer = submit(base, headers={"Authorization": bad} if bad else {})
        assert answer.status_code == 401, (bad, answer.text)
        assert answer.json() == {"detail": "No user found for Key ID and Secret"}

    assert keys_cli(env, "revoke", key_id).returncode == 0
    assert keys_cli(env, "revoke", key_id).returncode == 1  # already revoked
    assert submit(base, headers=auth).status_code == 401
    assert "revoked" in keys_cli(env, "list").stdout


def test_requests_are_visible_only_to_their_key(apis: tuple[dict[str, str], list[str]]) -> None:
    env, (base, other_base) = apis
    alice, bob = new_key(env, "alice"), new_key(env, "bob")
    rid = submit(base, headers=alice).json()["request_id"]
    prefix = f"{QUEUE_BASE}/requests/{rid}"
    calls = [
        ("GET", f"{prefix}/status"),
        ("GET", f"{prefix}/status/stream"),
        ("GET", prefix),
        ("PUT", f"{prefix}/cancel"),
        ("GET", f"/webhooks/requests/{rid}/deliveries"),
        ("POST", f"/webhooks/requests/{rid}/redeliver"),
    ]
    for method, path in calls:
        for api in (base, other_base):  # the owner is in PostgreSQL, not in one process
            answer = httpx.request(method, f"{api}/{path.lstrip('/')}", headers=bob, timeout=10)
            assert answer.status_code == 404, (method, path, answer.text)
            assert "detail" in answer.json()
    assert httpx.get(f"{other_base}/{prefix}/status", headers=alice, timeout=10).status_code == 202
    assert (
        httpx.get(f"{base}/webhooks/requests/{rid}/deliveries", headers=alice, timeout=10).status_code == 200
    )
    # Through the proxy too: the routes behind it apply the same checks.
    proxy = {"x-fal-target-url": f"https://queue.fal.run/{prefix}/status"}
    assert httpx.get(f"{base}/api/fal/proxy", headers={**proxy, **bob}, timeout=10).status_code == 404
    assert httpx.get(f"{base}/api/fal/proxy", headers={**proxy, **alice}, timeout=10).status_code == 202
    assert httpx.put(f"{base}/{prefix}/cancel", headers=alice, timeout=10).status_code == 202


def test_storage_routes_and_proxy_need_a_key(apis: tuple[dict[str, str], list[str]]) -> None:
    env, (base, _) = apis
    carol = new_key(env, "carol")
    token_url = f"{base}/storage/auth/token?storage_type=fal-cdn-v3"
    assert httpx.post(token_url, json={}, timeout=10).status_code == 401
    assert httpx.post(f"{base}/storage/upload/initiate", json={}, timeout=10).status_code == 401
    token = httpx.post(token_url, json={}, headers=carol, timeout=10).json()["token"]
    upload = {"Content-Type": "image/png", "X-Fal-File-Name": "a.png"}
    assert httpx.post(f"{base}/files/upload", content=b"png", headers=upload, timeout=10).status_code == 401
    with_token = {**upload, "Authorization": f"Bearer {token}"}
    assert (
        httpx.post(f"{base}/files/upload", content=b"png", headers=with_token, timeout=10).status_code == 200
    )
    assert (
        httpx.post(
            f"{base}/files/upload", content=b"png", headers={**upload, **carol}, timeout=10
        ).status_code
        == 200
    )
    proxied = {"x-fal-target-url": f"https://queue.fal.run/{APP}"}
    assert (
        httpx.post(f"{base}/api/fal/proxy", json={"image_url": "x"}, headers=proxied, timeout=10).status_code
        == 401
    )


def test_per_key_limits_hold_across_two_api_processes(apis: tuple[dict[str, str], list[str]]) -> None:
    env, bases = apis
    dave = new_key(env, "dave")
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def fire(api: str) -> None:
        response = submit(api, headers=dave)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=fire, args=(bases[i % 2],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(accepted) == IN_FLIGHT and len(refused) == 10 - IN_FLIGHT, [a.status_code for a in answers]
    assert all(int(a.headers["Retry-After"]) >= 1 and "detail" in a.json() for a in refused)
    # Another key is not affected by dave's limit.
    assert submit(bases[1], headers=new_key(env, "erin")).status_code == 200

    # Finishing requests frees in-flight slots, but the per-minute window still counts them.
    for answer in accepted:
        rid = answer.json()["request_id"]
        assert (
            httpx.put(f"{bases[0]}/{QUEUE_BASE}/requests/{rid}/cancel", headers=dave, timeout=10).status_code
            == 202
        )
    statuses = [submit(bases[i % 2], headers=dave).status_code for i in range(PER_MINUTE - IN_FLIGHT + 1)]
    assert statuses == [200] * (PER_MINUTE - IN_FLIGHT) + [429], statuses
    refused_now = submit(bases[0], headers=dave)
    assert refused_now.status_code == 429 and "per minute" in refused_now.json()["detail"]
    assert 1 <= int(refused_now.headers["Retry-After"]) <= 60
