"""?fal_max_queue_length over real HTTP, and X-Fal-Error-Type on every kind of error answer.

The API here serves an endpoint of its own besides the default one and publishes to queues no
worker consumes, so its waiting requests are exactly the ones these tests make.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.db import session_scope
from tests.support.client_helpers import APP, QUEUE_BASE
from tests.support.processes import start_api

LIMITED = "qlimit-owner/qlimit-app"
PAYLOAD = {"image_url": "http://127.0.0.1:9/never-fetched.png"}


@pytest.fixture(scope="module")
def limited_api(migrated: dict[str, str], logs_dir: Path) -> Iterator[str]:
    env = {
        **migrated,
        "APP_IDS": f"{APP},{LIMITED}",
        "QUEUE_NAME": migrated["QUEUE_NAME"] + "qlimit",
        "RECONCILE_INTERVAL_S": "0",
    }
    child, base = start_api(env, logs_dir, name="qlimit-api")
    yield base
    child.stop()


def _post(base: str, path: str, limit: Any = None, **kwargs: Any) -> httpx.Response:
    params = {} if limit is None else {"fal_max_queue_length": str(limit)}
    return httpx.post(f"{base}/{path}", params=params, timeout=30, **kwargs)


def _waiting(app_id: str) -> int:
    with session_scope() as session:
        query = text("SELECT count(*) FROM requests WHERE status = 'IN_QUEUE' AND app_id = :a")
        return int(session.execute(query, {"a": app_id}).scalar_one())


def _cancel_all(base: str, ids: list[str]) -> None:
    for request_id in ids:
        httpx.put(f"{base}/{LIMITED}/requests/{request_id}/cancel", timeout=30)


def test_submit_refused_when_more_than_n_are_waiting(limited_api: str) -> None:
    assert _waiting(LIMITED) == 0
    accepted: list[str] = []
    try:
        # 0, 1 and 2 waiting are not more than 2: each of these is taken.
        for _ in range(3):
            answer = _post(limited_api, LIMITED, 2, json=PAYLOAD)
            assert answer.status_code == 200, answer.text
            accepted.append(answer.json()["request_id"])
        # Three waiting is more than two: refused, on the fast path and on FastAPI's route alike
        # (a +json content type is FastAPI's to parse; the fast path takes application/json only).
        body = json.dumps(PAYLOAD).encode()
        for content_type in ("application/json", "application/vnd.fal+json"):
            refused = _post(limited_api, LIMITED, 2, content=body, headers={"content-type": content_type})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error_type"] == "queue_length_exceeded"
            assert "More than 2 requests are waiting" in refused.json()["detail"]
            assert refused.headers["x-fal-error-type"] == "queue_length_exceeded"
            assert int(refused.headers["retry-after"]) >= 1
        # The synchronous API sheds load the same way.
        run = _post(limited_api, f"run/{LIMITED}", 1, json=PAYLOAD)
        assert run.status_code == 429 and run.json()["error_type"] == "queue_length_exceeded"
        assert _waiting(LIMITED) == 3, "a refused submit leaves no row"
        # A larger limit, or none, still takes it.
        assert _post(limited_api, LIMITED, 3, json=PAYLOAD).status_code == 200
        assert _post(limited_api, LIMITED, json=PAYLOAD).status_code == 200
        accepted += [r["request_id"] for r in _listed(LIMITED) if r["request_id"] not in accepted]
        # Leaving the queue frees room: after cancelling all but two, a limit of 2 takes one.
        _cancel_all(limited_api, accepted[2:])
        assert _waiting(LIMITED) == 2
        again = _post(limited_api, LIMITED, 2, json=PAYLOAD)
        assert again.status_code == 200
        accepted.append(again.json()["request_id"])
    finally:
        _cancel_all(limited_api, accepted)
    assert _waiting(LIMITED) == 0


def _listed(app_id: str) -> list[dict[str, str]]:
    with session_scope() as session:
        query = text("SELECT id::text AS request_id FROM requests WHERE status = 'IN_QUEUE' AND app_id = :a")
        return [dict(r._mapping) for r in session.execute(query, {"a": app_id})]


def test_the_limit_counts_only_its_own_endpoint(limited_api: str) -> None:
    # Requests waiting for the default endpoint do not fill this one's queue.
    other = _post(limited_api, APP, json=PAYLOAD)
    assert other.status_code == 200
    try:
        assert _waiting(APP) >= 1
        answer = _post(limited_api, LIMITED, 0, json=PAYLOAD)
        assert answer.status_code == 200, answer.text
        # Now one waits here: a limit of 0 refuses the next.
        assert _post(limited_api, LIMITED, 0, json=PAYLOAD).status_code == 429
        _cancel_all(limited_api, [answer.json()["request_id"]])
    finally:
        httpx.put(f"{limited_api}/{QUEUE_BASE}/requests/{other.json()['request_id']}/cancel", timeout=30)


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bad_limit_is_422(limited_api: str, value: str) -> None:
    answer = _post(limited_api, LIMITED, value, json=PAYLOAD)
    assert answer.status_code == 422
    (detail,) = answer.json()["detail"]
    assert detail["loc"] == ["query", "fal_max_queue_length"]
    assert answer.headers["x-fal-error-type"] == "value_error"


def test_every_error_answer_names_its_type(limited_api: str) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    cases: list[tuple[httpx.Response, int, str]] = [
        (httpx.get(f"{limited_api}/{QUEUE_BASE}/requests/{unknown}", timeout=30), 404, "not_found"),
        (httpx.get(f"{limited_api}/{QUEUE_BASE}/requests/{unknown}/status", timeout=30), 404, "not_found"),
        (httpx.put(f"{limited_api}/{QUEUE_BASE}/requests/{unknown}/cancel", timeout=30), 404, "not_found"),
        (httpx.get(f"{limited_api}/no/such/route", timeout=30), 404, "not_found"),
        (httpx.delete(f"{limited_api}/{APP}", timeout=30), 405, "method_not_allowed"),
        # A validation error: the first error's own type.
        (_post(limited_api, APP, json={}), 422, "missing"),
        (_post(limited_api, APP, content=b"{not json", headers={"content-type": "application/json"}), 422,
         "json_invalid"),
        (_post(limited_api, APP, json=PAYLOAD, headers={"x-fal-queue-priority": "soon"}), 422, "value_error"),
        (_post(limited_api, APP, json=PAYLOAD, headers={"x-fal-no-retry": "maybe"}), 422, "value_error"),
    ]  # fmt: skip
    for answer, code, error_type in cases:
        assert answer.status_code == code, (answer.request.url, answer.text)
        assert answer.headers.get("x-fal-error-type") == error_type, (answer.request.url, answer.headers)
    # A still-running request's result is a 400 with a type too.
    waiting = _post(limited_api, LIMITED, json=PAYLOAD).json()["request_id"]
    try:
        early = httpx.get(f"{limited_api}/{LIMITED}/requests/{waiting}", timeout=30)
        assert early.status_code == 400 and early.headers["x-fal-error-type"] == "bad_request"
    finally:
        _cancel_all(limited_api, [waiting])
    # Success answers carry none.
    assert "x-fal-error-type" not in httpx.get(f"{limited_api}/healthz", timeout=30).headers
