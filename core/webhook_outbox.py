"""Webhook deliveries in PostgreSQL: the outbox row written when a request completes, and every
later transition of it (claim an attempt, record its outcome, sweep, redeliver).

Like the request transitions, each is a single conditional UPDATE, so any number of dispatchers
and sweepers may race: an attempt runs only after winning its claim (a lease), and a dispatcher
that dies mid-attempt is noticed when the lease runs out.
"""

from __future__ import annotations

import enum
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core import metric_rollups
from core.clock import utcnow
from core.config import get_settings
from core.models import RequestRow, Status
from core.webhook_models import DeliveryState, WebhookAttempt, WebhookDelivery

# Session.info key: deliveries made ready in this transaction; queueing.publish.unit_of_work
# publishes them once it has committed (core never loads the broker client).
_READY = "webhook_deliveries_ready"
# Waits are spread by +-JITTER so receivers recovering from an outage are not hit all at once.
JITTER = 0.2
# A delivery made due this recently may still be being published by the process that committed
# it (straight after its commit), so the sweep leaves it alone until then.
DELIVERY_PUBLISH_GRACE_S = 2.0
LOST_ATTEMPT = "the dispatcher running this attempt was lost (lease expired)"


@dataclass(frozen=True)
class Completion:
    """What the payload needs from a request that has just completed."""

    request_id: uuid.UUID
    webhook_url: str
    output: dict[str, Any] | None
    error: str | None
    error_status: int | None
    error_body: dict[str, Any] | None
    owner_key_id: str | None = None  # the submitting API key; None with AUTH_MODE=off
    timeout_type: str | None = None  # "user": the caller's X-Fal-Request-Timeout ran out


def webhook_user_id(done: Completion) -> str:
    """X-Fal-Webhook-User-Id: the submitting key's id; WEBHOOK_USER_ID when no key submitted it."""
    return done.owner_key_id or get_settings().webhook_user_id


def build_body(done: Completion) -> str:
    """fal's webhook payload, serialized once: every attempt sends these exact bytes."""
    request_id = str(done.request_id)
    failed = done.error is not None
    document: dict[str, Any] = {
        "request_id": request_id,
        # Equal here: this service never re-routes a request under a new gateway id.
        "gateway_request_id": request_id,
        "status": "ERROR" if failed else "OK",
        "payload": done.error_body if failed else done.output,
        "error": f"Invalid status code: {done.error_status}" if failed else None,
        "payload_error": None,
    }
    try:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        document["payload"] = None
        document["payload_error"] = f"the payload could not be serialized as JSON: {exc}"
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def enqueue(session: Session, done: Completion) -> uuid.UUID:
    """Insert the delivery in the caller's transaction; it is published after the commit."""
    now = utcnow()
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        request_id=done.request_id,
        url=done.webhook_url,
        user_id=webhook_user_id(done),
        body=build_body(done),
        timeout_type=done.timeout_type,
        state=DeliveryState.PENDING.value,
        attempts=0,
        round_attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    session.flush()
    _mark_ready(session, delivery.id)
    return delivery.id


@dataclass(frozen=True)
class Ready:
    """A delivery this transaction made ready, to publish once it has committed."""

    delivery_id: uuid.UUID
    countdown_s: float | None = None  # the broker holds the message this long (a retry's wait)


def _mark_ready(session: Session, delivery_id: uuid.UUID, countdown_s: float | None = None) -> None:
    session.info.setdefault(_READY, []).append(Ready(delivery_id, countdown_s))


def take_ready(session: Session) -> list[Ready]:
    """The deliveries made ready in this session since the last call, for the publisher.

    Only a session that is published after its commit (queueing.publish.unit_of_work) reads
    them; any other session drops them when it closes, and the sweep (`find_due`) publishes
    those deliveries after DELIVERY_PUBLISH_GRACE_S.
    """
    ready: list[Ready] = session.info.pop(_READY, [])
    return ready


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    request_id: uuid.UUID
    url: str
    user_id: str
    body: str
    attempt: int  # the delivery's attempt number: the fencing token of this attempt
    round_attempt: int
    timeout_type: str | None = None  # sent as X-Fal-Request-Timeout-Type


def claim_attempt(session: Session, delivery_id: uuid.UUID, *, lease_s: float) -> Claimed | None:
    """Take the next attempt of a due delivery, or None (not due, delivered, or leased elsewhere)."""
    now = utcnow()
    row = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.state == DeliveryState.PENDING.value,
            # Broker countdowns and the clocks of different machines differ slightly.
            WebhookDelivery.next_attempt_at <= now + timedelta(seconds=1),
            or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            round_attempts=WebhookDelivery.round_attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_s),
            published_at=None,  # the message that led here is consumed
        )
        .returning(
            WebhookDelivery.request_id,
            WebhookDelivery.url,
            WebhookDelivery.user_id,
            WebhookDelivery.body,
            WebhookDelivery.attempts,
            WebhookDelivery.round_attempts,
            WebhookDelivery.timeout_type,
        )
    ).one_or_none()
    if row is None:
        return None
    # An earlier attempt still open was run by a dispatcher that died: say so in the log.
    lost = session.execute(
        update(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == delivery_id, WebhookAttempt.finished_at.is_(None))
        .values(finished_at=now, error=LOST_ATTEMPT)
        .returning(WebhookAttempt.id)
    ).all()
    metric_rollups.record_attempts(session, "error", len(lost))
    session.add(WebhookAttempt(delivery_id=delivery_id, number=row.attempts, started_at=now))
    return Claimed(
        delivery_id,
        row.request_id,
        row.url,
        row.user_id,
        row.body,
        row.attempts,
        row.round_attempts,
        row.timeout_type,
    )


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def accepted(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def metric_outcome(self) -> str:
        """`delivered` (2xx), `http_error` (any other answer), `error` (no answer)."""
        if self.status_code is None:
            return "error"
        return "delivered" if 200 <= self.status_code < 300 else "http_error"


class Next(enum.Enum):
    DONE = "done"  # delivered, failed for good, or taken over by another dispatcher
    RETRY = "retry"


@dataclass(frozen=True)
class AfterAttempt:
    next: Next
    delay_s: float = 0.0


def finish_attempt(
    session: Session,
    claimed: Claimed,
    outcome: Outcome,
    *,
    retry_delays: Sequence[float],
    publish_within_s: float,
) -> AfterAttempt:
    """Record the attempt; schedule the next one or end the delivery.

    When the next attempt is due within `publish_within_s`, `published_at` is set here and the
    delivery is made ready with that countdown (published after the commit); later ones are
    left to the sweep.
    """
    now = utcnow()
    this_attempt = (
        WebhookAttempt.delivery_id == claimed.delivery_id,
        WebhookAttempt.number == claimed.attempt,
    )
    recorded = {"finished_at": now, "status_code": outcome.status_code, "error": outcome.error}
    still_open = session.execute(
        update(WebhookAttempt)
        .where(*this_attempt, WebhookAttempt.finished_at.is_(None))
        .values(**recorded)
        .returning(WebhookAttempt.id)
    ).one_or_none()
    if still_open is not None:
        metric_rollups.record_attempts(session, outcome.metric_outcome)
    else:
        # A later claim closed it as lost and counted it then (an `error`): the log gets the
        # real outcome, the counters, which only grow, keep the first one.
        session.execute(update(WebhookAttempt).where(*this_attempt).values(**recorded))
    common = {"lease_expires_at": None, "last_status_code": outcome.status_code, "last_error": outcome.error}
    pending = (
        WebhookDelivery.id == claimed.delivery_id,
        WebhookDelivery.state == DeliveryState.PENDING.value,
    )

    def end_in(state: DeliveryState, conditions: tuple[Any, ...]) -> AfterAttempt:
        ended = session.execute(
            update(WebhookDelivery)
            .where(*conditions)
            .values(state=state.value, finished_at=now, **common)
            .returning(WebhookDelivery.id)
        ).one_or_none()
        if ended is not None:
            metric_rollups.record_delivery_state(session, state.value, +1)
        return AfterAttempt(Next.DONE)

    if outcome.accepted:
        # A success counts even if a slower duplicate attempt holds the lease now.
        return end_in(DeliveryState.DELIVERED, pending)
    # A failure is recorded only while this attempt is still the latest (fencing).
    mine = (*pending, WebhookDelivery.attempts == claimed.attempt)
    if claimed.round_attempt > len(retry_delays):
        return end_in(DeliveryState.FAILED, mine)
    delay = retry_delays[claimed.round_attempt - 1] * random.uniform(1 - JITTER, 1 + JITTER)
    soon = delay <= publish_within_s
    updated = session.execute(
        update(WebhookDelivery)
        .where(*mine)
        .values(
            next_attempt_at=now + timedelta(seconds=delay),
            published_at=now if soon else None,
            **common,
        )
        .returning(WebhookDelivery.id)
    ).scalar_one_or_none()
    if updated is None or not soon:
        return AfterAttempt(Next.DONE)
    _mark_ready(session, claimed.delivery_id, countdown_s=delay)
    return AfterAttempt(Next.RETRY, delay)


def set_published(session: Session, delivery_id: uuid.UUID, published: bool) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == DeliveryState.PENDING.value)
        .values(published_at=utcnow() if published else None)
    )


def find_due(session: Session, *, republish_after_s: float, limit: int = 500) -> list[uuid.UUID]:
    """Pending deliveries due now that no dispatcher holds and no live message will reach."""
    now = utcnow()
    return list(
        session.execute(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.state == DeliveryState.PENDING.value,
                WebhookDelivery.next_attempt_at <= now - timedelta(seconds=DELIVERY_PUBLISH_GRACE_S),
                or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
                or_(
                    WebhookDelivery.published_at.is_(None),
                    # A message published long ago and never claimed was lost with its broker.
                    WebhookDelivery.published_at < now - timedelta(seconds=republish_after_s),
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).scalars()
    )


def deliveries_of(
    session: Session, request_id: uuid.UUID
) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    deliveries = session.execute(
        select(WebhookDelivery)
        .where(WebhookDelivery.request_id == request_id)
        .order_by(WebhookDelivery.created_at)
    ).scalars()
    result = []
    for delivery in deliveries:
        attempts = session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery.id)
            .order_by(WebhookAttempt.number)
        ).scalars()
        result.append((delivery, list(attempts)))
    return result


def restart(session: Session, delivery_id: uuid.UUID) -> bool:
    """Start a finished (delivered or failed) delivery over with a full schedule."""
    # The state it leaves, locked so that it cannot change before the UPDATE (the gauges of the
    # finished states are kept from these transitions).
    finished = (WebhookDelivery.id == delivery_id, WebhookDelivery.state != DeliveryState.PENDING.value)
    left = session.execute(
        select(WebhookDelivery.state).where(*finished).with_for_update()
    ).scalar_one_or_none()
    if left is None:
        return False
    restarted = session.execute(
        update(WebhookDelivery)
        .where(*finished)
        .values(
            state=DeliveryState.PENDING.value,
            round_attempts=0,
            next_attempt_at=utcnow(),
            lease_expires_at=None,
            published_at=None,
            finished_at=None,
        )
        .returning(WebhookDelivery.id)
    ).scalar_one_or_none()
    if restarted is not None:
        metric_rollups.record_delivery_state(session, left, -1)
        _mark_ready(session, delivery_id)
    return restarted is not None


class Redelivery(enum.Enum):
    STARTED = "started"
    NOT_FOUND = "not_found"
    NOT_COMPLETED = "not_completed"
    NO_WEBHOOK = "no_webhook"
    IN_PROGRESS = "in_progress"


def redeliver(session: Session, request_id: uuid.UUID) -> Redelivery:
    """Send a completed request's webhook again: its last delivery restarts with a full schedule
    (same delivery id, so receivers still deduplicate); a request without one gets one."""
    request = session.get(RequestRow, request_id)
    if request is None:
        return Redelivery.NOT_FOUND
    if request.status != Status.COMPLETED.value:
        return Redelivery.NOT_COMPLETED
    if not request.webhook_url:
        return Redelivery.NO_WEBHOOK
    last = session.execute(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.request_id == request_id)
        .order_by(WebhookDelivery.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if last is None:
        enqueue(session, completion_of(request))
        return Redelivery.STARTED
    return Redelivery.STARTED if restart(session, last) else Redelivery.IN_PROGRESS


def completion_of(row: Any) -> Completion:
    """The payload's inputs from a request row (or a RETURNING row with the same columns)."""
    return Completion(
        row.id,
        row.webhook_url,
        row.output,
        row.error,
        row.error_status,
        row.error_body,
        row.owner_key_id,
        row.timeout_type,
    )


# Columns of the request that completion_of needs, for the completing UPDATE's RETURNING.
COMPLETION_COLUMNS = (
    RequestRow.id,
    RequestRow.webhook_url,
    RequestRow.output,
    RequestRow.error,
    RequestRow.error_status,
    RequestRow.error_body,
    RequestRow.owner_key_id,
    RequestRow.timeout_type,
)
