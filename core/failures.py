"""How a failed request is reported: the status's `error`/`error_type` and the result's replay.

fal reports failures as COMPLETED with `error` and `error_type`; fetching the result then answers
with the failure's own HTTP status and body (a 422 `detail` list for bad input, an
`{"detail", "error_type"}` object for infrastructure errors).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

USER_TIMEOUT = "user"


@dataclass(frozen=True)
class Failure:
    message: str
    error_type: str
    status_code: int
    body: dict[str, Any]
    # "user" when the caller's own X-Fal-Request-Timeout ran out (X-Fal-Request-Timeout-Type).
    timeout_type: str | None = None


def invalid_input(message: str, error_type: str, *, field: str = "image_url", value: Any = None) -> Failure:
    """The request's input was refused (unfetchable, not an image, no face …): a 422."""
    detail: dict[str, Any] = {"loc": ["body", field], "msg": message, "type": error_type}
    if value is not None:
        detail["input"] = value
    return Failure(message, error_type, 422, {"detail": [detail]})


def infrastructure(message: str, error_type: str, status_code: int) -> Failure:
    return Failure(message, error_type, status_code, {"detail": message, "error_type": error_type})


def cancelled() -> Failure:
    return infrastructure("Request cancelled", "client_cancelled", 499)


def start_timeout() -> Failure:
    # The start deadline is only ever the caller's X-Fal-Request-Timeout.
    failure = infrastructure("Request timed out before it could start", "request_timeout", 504)
    return replace(failure, timeout_type=USER_TIMEOUT)


def run_timeout() -> Failure:
    return infrastructure("Request timed out", "request_timeout", 504)


def weights_missing(message: str) -> Failure:
    return infrastructure(message, "weights_error", 503)


def runner_disconnected() -> Failure:
    """The worker running a request submitted with X-Fal-No-Retry was lost."""
    return infrastructure(
        "The worker running this request was lost; not retried (X-Fal-No-Retry)",
        "runner_disconnected",
        503,
    )


def runner_lost(attempts: int) -> Failure:
    return infrastructure(
        f"The worker running this request was lost {attempts} times; giving up",
        "runner_disconnected",
        503,
    )


def internal(message: str = "Internal error while processing the request") -> Failure:
    return infrastructure(message, "internal_error", 500)
