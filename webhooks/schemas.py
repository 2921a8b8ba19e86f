"""OpenAPI models of the webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class WebhookAttemptView(BaseModel):
    number: int = Field(description="1 for the first attempt; counts on across redeliveries.")
    started_at: datetime
    finished_at: datetime | None
    status_code: int | None = Field(description="The receiver's HTTP status; null if none came.")
    error: str | None = Field(description="Why the attempt failed (timeout, refused address, status…).")


class WebhookDeliveryView(BaseModel):
    id: str = Field(description="Sent as X-Fal-Webhook-Delivery-Id on every attempt.")
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When the next attempt is due (pending only).")
    finished_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttemptView]


class WebhookDeliveriesResponse(BaseModel):
    request_id: str
    deliveries: list[WebhookDeliveryView]


class JsonWebKey(BaseModel):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str = Field(description="The raw 32-byte public key, base64url without padding.")
    kid: str
    use: Literal["sig"]
    alg: Literal["EdDSA"]


class JsonWebKeySet(BaseModel):
    keys: list[JsonWebKey]
