"""api.fast_path answers submit, status and result exactly as the FastAPI routes do, and hands
every call it should not answer (validation errors, bad keys, other paths) on to FastAPI.

Two apps built in this process over the real PostgreSQL and Redis: one as served (with the fast
path) and one with the fast path removed; the same calls go to both and must get the same
answers. A probe between the fast path and FastAPI records which calls got past it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.app import create_app
from api.fast_path import FastPathMiddleware
from core.db_async import close_pool
from tests.support.client_helpers import APP
from tests.support.settings_reset import reset_cached_settings

pytestmark = pytest.mark.usefixtures("migrated")
QUEUE_BASE = APP.rsplit("/", 1)[0]
JSON = {"content-type": "application/json"}
PAYLOAD = {"image_url": "http://127.0.0.1:9/never-fetched.png", "smile": 0.5}


class Probe:
    """Sits between the fast path and the rest of the app; counts what reached FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


def _apps() -> tuple[FastAPI, FastAPI, list[str]]:
    served = create_app()
    plain = create_app()
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not FastPathMiddleware]
    # The last user middleware is the innermost, the fast path; the probe goes just inside it.
    served.add_middleware(Probe)
    served.user_middleware.append(served.user_middleware.pop(0))
    stack = served.build_middleware_stack()
    served.middleware_stack = stack
    probe = _find_probe(stack)
    return served, plain, probe.paths


def _find_probe(app: Any) -> Probe:
    while not isinstance(app, Probe):
        app = app.app
    return app


@pytest.fixture
def settings_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield
    monkeypatch.undo()
    reset_cached_settings()


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def _both(
    served: FastAPI, plain: FastAPI, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    answers = []
    for app in (served, plain):
        async with _client(app) as c:
            answers.append(await c.request(method, url, **kwargs))
    return answers[0], answers[1]


def _same(a: httpx.Response, b: httpx.Response, *, ignore: tuple[str, ...] = ()) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    body_a, body_b = a.json(), b.json()
    if isinstance(body_a, dict):
        for key in ignore:
            body_a.pop(key, None), body_b.pop(key, None)
    assert body_a == body_b
    for header in ("content-type", "x-fal-request-id", "retry-after", "x-fal-error-type"):
        if header == "x-fal-request-id" and "request_id" in ignore:
            continue
        assert a.headers.get(header) == b.headers.get(header), header


def test_same_answers_and_only_the_unusual_reaches_fastapi(settings_restored: None) -> None:
    async def scenario() -> None:
        served, plain, reached = _apps()
        try:
            async with _client(served) as c:
                first = await c.post(f"/{APP}", json=PAYLOAD)
                assert first.status_code == 200 and first.json()["status"] == "IN_QUEUE"
                rid = first.json()["request_id"]
                assert first.headers["x-fal-request-id"] == rid == first.json()["gateway_request_id"]
                assert first.json()["status_url"] == f"http://api/{QUEUE_BASE}/requests/{rid}/status"
                low = await c.post(f"/{APP}", json=PAYLOAD, headers={"x-fal-queue-priority": "low"})
                assert low.json()["queue_position"] > first.json()["queue_position"]
            assert reached == [], "valid submits are answered by the fast path"

            handled = [
                f"/{QUEUE_BASE}/requests/{rid}/status",
                f"/{QUEUE_BASE}/requests/{rid}/status?logs=1",
                f"/{QUEUE_BASE}/requests/{rid}/status?logs=false",
                f"/{QUEUE_BASE}/requests/{rid}",
                f"/{QUEUE_BASE}/requests/{uuid.uuid4()}/status",
                f"/{QUEUE_BASE}/requests/not-a-uuid/status",
                f"/{QUEUE_BASE}/requests/{uuid.uuid4()}",
            ]
            for url in handled:
                a, b = await _both(served, plain, "GET", url)
                _same(a, b)
            assert reached == [], "status and result are answered by the fast path"

            # A submit's answer matches the route's except for the new request's id and URLs.
            a, b = await _both(served, plain, "POST", f"/{APP}", json=PAYLOAD)
            _same(a, b, ignore=("request_id", "gateway_request_id", "status_url", "response_url",
                                "cancel_url", "queue_position"))  # fmt: skip

            # Calls the fast path must leave to FastAPI: the same errors, from FastAPI itself.
            declined = [
                ("GET", f"/{QUEUE_BASE}/requests/{rid}/status?logs=maybe", {}),
                ("POST", f"/{APP}", {"json": {**PAYLOAD, "smile": 99}}),
                ("POST", f"/{APP}", {"json": {"smile": 0.5}}),
                ("POST", f"/{APP}", {"content": b"{not json", "headers": JSON}),
                ("POST", f"/{APP}", {"json": PAYLOAD, "headers": {"x-fal-queue-priority": "urgent"}}),
                ("POST", f"/{APP}", {"json": PAYLOAD, "headers": {"x-fal-request-timeout": "soon"}}),
                ("POST", f"/{APP}?fal_webhook=ftp://example.com/x", {"json": PAYLOAD}),
            ]
            for method, url, kwargs in declined:
                before = len(reached)
                a, b = await _both(served, plain, method, url, **kwargs)
                assert a.status_code in (400, 422), (url, a.text)
                _same(a, b)
                assert len(reached) == before + 1, f"{method} {url} should reach FastAPI"
        finally:
            await close_pool()

    asyncio.run(scenario())


def test_keys_checked_and_database_outage_is_a_503(
    settings_restored: None, monkeypatch: pytest.MonkeyPatch, unused_port: int
) -> None:
    monkeypatch.setenv("AUTH_MODE", "keys")
    monkeypatch.setenv("API_KEYS", "fast:secret")
    reset_cached_settings()

    async def with_keys() -> None:
        served, plain, reached = _apps()
        try:
            good = {"Authorization": "Key fast:secret"}
            a, b = await _both(served, plain, "POST", f"/{APP}", json=PAYLOAD)
            _same(a, b)
            assert a.status_code == 401 and len(reached) == 1
            async with _client(served) as c:
                ok = await c.post(f"/{APP}", json=PAYLOAD, headers=good)
                assert ok.status_code == 200 and len(reached) == 1
                status_url = f"/{QUEUE_BASE}/requests/{ok.json()['request_id']}/status"
                assert (await c.get(status_url, headers=good)).status_code == 202
                wrong = await c.get(status_url, headers={"Authorization": "Key fast:wrong"})
                assert wrong.status_code == 401 and len(reached) == 2
        finally:
            await close_pool()

    asyncio.run(with_keys())

    # PostgreSQL unreachable: fal's 503 with its retry hints, from the fast path too, also when
    # the key itself must be looked up there.
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{unused_port}/none")
    reset_cached_settings()

    async def outage(headers: dict[str, str]) -> None:
        served, plain, reached = _apps()
        try:
            status_url = f"/{QUEUE_BASE}/requests/{uuid.uuid4()}/status"
            for method, url in (("POST", f"/{APP}"), ("GET", status_url)):
                body = PAYLOAD if method == "POST" else None
                a, b = await _both(served, plain, method, url, json=body, headers=headers)
                assert a.status_code == 503 and a.json()["error_type"] == "service_unavailable", a.text
                assert a.headers["x-fal-retryable"] == "true"
                _same(a, b)
                await close_pool()
            assert reached == []
        finally:
            await close_pool()

    asyncio.run(outage({"Authorization": "Key some-id:some-secret"}))  # a key stored there
    monkeypatch.setenv("AUTH_MODE", "off")
    reset_cached_settings()
    asyncio.run(outage({}))


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_long_queue_positions_do_not_starve_the_pool(
    settings_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submits whose position comes from the board, more at once than the pool has connections:
    the board's read must not wait for a connection that a submit holds while waiting for it."""
    monkeypatch.setenv("QUEUE_POSITION_EXACT_UP_TO", "1")
    monkeypatch.setenv("QUEUE_POSITION_REFRESH_S", "0.001")
    monkeypatch.setenv("API_DB_POOL_SIZE", "2")
    monkeypatch.setenv("API_DB_ACQUIRE_TIMEOUT_S", "3")
    reset_cached_settings()

    async def burst() -> list[httpx.Response]:
        served, _, _ = _apps()
        try:
            async with _client(served) as c:
                await c.post(f"/{APP}", json=PAYLOAD)  # at least one request ahead of the burst
                return list(await asyncio.gather(*(c.post(f"/{APP}", json=PAYLOAD) for _ in range(8))))
        finally:
            await close_pool()

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
    assert all(a.json()["queue_position"] >= 1 for a in answers)
