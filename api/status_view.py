"""A request row as fal's status JSON, and as the result endpoint's reply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from core.models import Status
from core.requests_table import RequestView

REQUEST_ID_HEADER = "x-fal-request-id"
TIMEOUT_TYPE_HEADER = "x-fal-request-timeout-type"


@dataclass(frozen=True)
class RequestUrls:
    status_url: str
    response_url: str
    cancel_url: str

    @classmethod
    def build(cls, base_url: str, queue_base: str, request_id: str) -> RequestUrls:
        response_url = f"{base_url.rstrip('/')}/{queue_base}/requests/{request_id}"
        return cls(
            status_url=f"{response_url}/status",
            response_url=response_url,
            cancel_url=f"{response_url}/cancel",
        )


def status_body(
    row: RequestView,
    urls: RequestUrls,
    *,
    logs: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The status JSON: `queue_position` while queued, `logs` (maybe null) otherwise."""
    body: dict[str, Any] = {
        "status": row.status,
        "request_id": str(row.id),
        "response_url": urls.response_url,
        "status_url": urls.status_url,
        "cancel_url": urls.cancel_url,
    }
    if row.status == Status.IN_QUEUE:
        body["queue_position"] = row.queue_position or 0
        # fal's clients ignore logs while queued; JS tolerates the key, Python needs it later.
        body["logs"] = logs
        return body
    body["logs"] = logs
    if row.status == Status.COMPLETED:
        # fal's metrics only; the engine stage timings stored beside them are for /metrics.
        body["metrics"] = {k: v for k, v in (row.metrics or {}).items() if k != "stages"}
        if row.error is not None:
            body["error"] = row.error
            body["error_type"] = row.error_type
    return body


def request_headers(row: RequestView) -> dict[str, str]:
    """The headers of any answer about this request: its id, and for a request that failed on
    the caller's own X-Fal-Request-Timeout, X-Fal-Request-Timeout-Type (fal's clients do not
    retry such a 504)."""
    headers = {REQUEST_ID_HEADER: str(row.id)}
    if row.timeout_type:
        headers[TIMEOUT_TYPE_HEADER] = row.timeout_type
    return headers


def status_code_for(row: RequestView) -> int:
    # fal answers 202 while the request is pending and 200 once it is completed.
    return 200 if row.status == Status.COMPLETED else 202


def result_response(row: RequestView) -> JSONResponse:
    """The model's own reply: its output, or the failure's status code and body."""
    headers = request_headers(row)
    if row.status != Status.COMPLETED:
        return JSONResponse({"detail": "Request is still in progress"}, status_code=400, headers=headers)
    if row.error is not None:
        if row.error_type and row.error_status != 422:
            headers["x-fal-error-type"] = row.error_type
        body = row.error_body or {"detail": row.error, "error_type": row.error_type}
        return JSONResponse(body, status_code=row.error_status or 500, headers=headers)
    return JSONResponse(row.output or {}, status_code=200, headers=headers)
