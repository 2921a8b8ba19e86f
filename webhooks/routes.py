"""Webhook endpoints: the public JWKS that verifies signatures, and per request the delivery log
and a redelivery (both visible only to the API key that submitted the request).

`webhook_routers` builds them around the API's own caller dependency, so that this package never
imports the API process. Without `from __future__ import annotations`: the route signatures
name that dependency, a local of the factory, which FastAPI could not resolve from a string.
"""

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from core.config import get_settings
from core.db import session_scope
from core.requests_table import get
from core.webhook_models import DeliveryState
from core.webhook_outbox import Redelivery, deliveries_of, redeliver
from queueing.publish import unit_of_work
from webhooks.keys import jwks, published_keys
from webhooks.schemas import (
    JsonWebKeySet,
    WebhookAttemptView,
    WebhookDeliveriesResponse,
    WebhookDeliveryView,
)

# Receivers may cache the key set; rotation keeps retired keys published for much longer.
JWKS_MAX_AGE_S = 300
_NOT_FOUND = {"detail": "Request not found"}
_CONFLICTS = {
    Redelivery.NOT_COMPLETED: "The request has not completed yet",
    Redelivery.NO_WEBHOOK: "The request was submitted without fal_webhook",
    Redelivery.IN_PROGRESS: "A delivery of this request is still in progress",
}


class Caller(Protocol):
    """What these routes need of the API's caller: whether it may see a request."""

    def owns(self, owner_key_id: str | None) -> bool: ...


def webhook_routers(
    caller_dependency: Callable[..., Any], parse_request_id: Callable[[str], uuid.UUID | None]
) -> list[APIRouter]:
    """The public JWKS router, and the per-request routers behind `caller_dependency` (the API's
    key check, which returns the Caller); `parse_request_id` reads a path's request id the way
    the API's other routes do."""
    keys_router = APIRouter(tags=["webhooks"])
    router = APIRouter(
        prefix="/webhooks/requests", tags=["webhooks"], dependencies=[Depends(caller_dependency)]
    )
    # FastAPI runs the dependency once per request, for the router and the parameter together.
    AuthCaller = Annotated[Caller, Depends(caller_dependency)]

    @keys_router.get(
        "/.well-known/jwks.json",
        summary="Public keys that verify X-Fal-Webhook-Signature",
        response_model=JsonWebKeySet,
    )
    def jwks_document() -> JSONResponse:
        with session_scope() as session:
            document = jwks(published_keys(session, get_settings()))
        return JSONResponse(document, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"})

    @router.get(
        "/{request_id}/deliveries",
        summary="Webhook deliveries of a request, with every attempt",
        response_model=WebhookDeliveriesResponse,
        responses={404: {"description": "Unknown request"}},
    )
    def list_deliveries(request_id: str, caller: AuthCaller) -> JSONResponse:
        rid = parse_request_id(request_id)
        body = _deliveries(rid, caller) if rid is not None else None
        if body is None:
            return JSONResponse(_NOT_FOUND, status_code=404)
        return JSONResponse(body)

    @router.post(
        "/{request_id}/redeliver",
        summary="Send a completed request's webhook again, with a fresh retry schedule",
        response_model=WebhookDeliveriesResponse,
        status_code=202,
        responses={
            404: {"description": "Unknown request"},
            409: {"description": "Nothing to redeliver now"},
        },
    )
    def redeliver_request(request_id: str, caller: AuthCaller) -> JSONResponse:
        rid = parse_request_id(request_id)
        if rid is None or not _visible(rid, caller):
            return JSONResponse(_NOT_FOUND, status_code=404)
        # Published once this commits (or by the sweep, if that publish is lost).
        with unit_of_work() as session:
            outcome = redeliver(session, rid)
        if outcome is Redelivery.NOT_FOUND:
            return JSONResponse(_NOT_FOUND, status_code=404)
        if outcome is not Redelivery.STARTED:
            return JSONResponse({"detail": _CONFLICTS[outcome]}, status_code=409)
        return JSONResponse(_deliveries(rid, caller), status_code=202)

    return [keys_router, router]


def _visible(request_id: uuid.UUID, caller: Caller) -> bool:
    with session_scope() as session:
        row = get(session, request_id)
        return row is not None and caller.owns(row.owner_key_id)


def _deliveries(request_id: uuid.UUID, caller: Caller) -> dict[str, Any] | None:
    with session_scope() as session:
        row = get(session, request_id)
        # Another key's request is reported exactly like an unknown one.
        if row is None or not caller.owns(row.owner_key_id):
            return None
        views = [
            WebhookDeliveryView(
                id=str(delivery.id),
                url=delivery.url,
                state=DeliveryState(delivery.state).value,
                attempts=delivery.attempts,
                created_at=delivery.created_at,
                next_attempt_at=delivery.next_attempt_at
                if delivery.state == DeliveryState.PENDING.value
                else None,
                finished_at=delivery.finished_at,
                last_status_code=delivery.last_status_code,
                last_error=delivery.last_error,
                attempt_log=[
                    WebhookAttemptView(
                        number=a.number,
                        started_at=a.started_at,
                        finished_at=a.finished_at,
                        status_code=a.status_code,
                        error=a.error,
                    )
                    for a in attempts
                ],
            )
            for delivery, attempts in deliveries_of(session, request_id)
        ]
    response = WebhookDeliveriesResponse(request_id=str(request_id), deliveries=views)
    return response.model_dump(mode="json")
