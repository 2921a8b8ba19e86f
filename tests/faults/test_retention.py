"""Results expire: the sweep deletes the output files in S3 and the result in the row after the
retention (RESULT_RETENTION_S, or per request `x-fal-object-lifecycle-preference`), and the
result endpoint then answers 410 result_expired."""

from __future__ import annotations

import json

import httpx

from tests.support.harness import Service, output_objects, result, submit, wait_all_completed, wait_for


def test_results_expire_after_their_retention(standard_service: tuple[Service, str, dict[str, str]]) -> None:
    svc, base, auth = standard_service
    short = {**auth, "x-fal-object-lifecycle-preference": json.dumps({"expiration_duration_seconds": 4})}
    brief = submit(base, headers=short).json()["request_id"]
    kept = submit(base, headers=auth).json()["request_id"]  # default: one hour
    wait_all_completed(svc.env, [brief], timeout=120)
    assert output_objects(svc.env, brief) == 1  # kept for now: the sweep waits 4 s

    expired = wait_for(lambda: (r := result(base, brief, auth)).status_code == 410 and r, 30, "expiry")
    assert expired.json() == {
        "detail": "The result of this request has expired and was deleted",
        "error_type": "result_expired",
    }
    assert output_objects(svc.env, brief) == 0
    # The status stays fal's COMPLETED; only the result is gone.
    status = httpx.get(
        f"{base}/fal-ai/live-portrait/requests/{brief}/status", headers=auth, timeout=10
    ).json()
    assert status["status"] == "COMPLETED"

    wait_all_completed(svc.env, [kept], timeout=120)
    answer = result(base, kept, auth)
    assert answer.status_code == 200 and output_objects(svc.env, kept) == 1
    assert httpx.get(answer.json()["image"]["url"], timeout=10).status_code == 200


def test_bad_lifecycle_header_is_422(standard_service: tuple[Service, str, dict[str, str]]) -> None:
    _, base, auth = standard_service
    for value in ("not json", '{"expiration_duration_seconds": "soon"}', "[1]"):
        answer = submit(base, headers={**auth, "x-fal-object-lifecycle-preference": value})
        assert answer.status_code == 422, (value, answer.text)
        assert answer.json()["detail"][0]["loc"] == ["header", "x-fal-object-lifecycle-preference"]
