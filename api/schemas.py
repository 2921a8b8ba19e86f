"""Request and response bodies as the OpenAPI document shows them.

The input is the engine's `EditParams` plus `image_url`; unknown fields and out-of-range values
are refused with a 422, exactly as the engine's own model defines them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from core.edit_params import EditParams

_URL_SCHEMES = ("http://", "https://", "data:")
# A URL is stored in the request's row as sent, and a row stays under 8 KB; browsers and CDNs
# refuse much longer URLs anyway. Data URIs of any size are fine: large ones go to the bucket.
MAX_URL_CHARS = 4096


class LivePortraitInput(EditParams):
    image_url: str = Field(
        ...,
        min_length=1,
        max_length=30_000_000,
        description="URL (http or https), data URI, or uploaded file URL of the portrait to edit.",
        examples=["https://example.com/portrait.jpeg"],
    )

    @field_validator("image_url")
    @classmethod
    def _supported_scheme(cls, value: str) -> str:
        if not value.lower().startswith(_URL_SCHEMES):
            raise ValueError("image_url must be an http(s) URL or a data URI")
        if len(value) > MAX_URL_CHARS and value[:5].lower() != "data:":
            raise ValueError(
                f"image_url is too long ({len(value)} characters; a URL may have {MAX_URL_CHARS});"
                " send the image as a data URI or upload it"
            )
        return value


class Image(BaseModel):
    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    width: int | None = None
    height: int | None = None


class LivePortraitImageOutput(BaseModel):
    image: Image


class LogEntry(BaseModel):
    message: str
    level: str
    source: str
    timestamp: str


class QueueStatus(BaseModel):
    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int | None = Field(None, description="Requests ahead of this one (IN_QUEUE only).")
    logs: list[LogEntry] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None


class SubmitResponse(QueueStatus):
    gateway_request_id: str


class CancelResponse(BaseModel):
    status: Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"]
