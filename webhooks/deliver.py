"""One attempt of a delivery, as a dispatcher runs it: claim, sign, send, record, schedule.

Every attempt carries the same body, request id and delivery id; the timestamp and signatures
are made per attempt, so a retry hours later still passes the receiver's freshness check. With
WEBHOOK_STANDARD_SECRET set, the Standard Webhooks headers come too, their webhook-id being the
delivery id (so it is as stable as X-Fal-Webhook-Delivery-Id, redeliveries included).
"""

from __future__ import annotations

import logging
import time
import uuid

from core.config import Settings, get_settings, standard_secret_bytes
from core.db import session_scope
from core.log_context import bind_request_id
from core.webhook_outbox import AfterAttempt, Claimed, claim_attempt, finish_attempt
from queueing.publish import unit_of_work
from webhooks import sender
from webhooks.keys import SigningKey, signing_key
from webhooks.signing import ATTEMPT, DELIVERY_ID, signature_headers
from webhooks.standard_signing import standard_headers

log = logging.getLogger(__name__)

# Waits up to this long go to the broker as a countdown; longer ones are left to the sweep, so
# that no message sits unacknowledged in a dispatcher for long.
COUNTDOWN_MAX_S = 60.0
# As on the status and result answers: "user" when the caller's X-Fal-Request-Timeout ran out.
REQUEST_TIMEOUT_TYPE = "X-Fal-Request-Timeout-Type"


def attempt_delivery(delivery_id: uuid.UUID, settings: Settings | None = None) -> AfterAttempt | None:
    settings = settings or get_settings()
    with session_scope() as session:
        # The key first: a dispatcher that cannot sign must not use up an attempt.
        key = signing_key(session, settings)
    with session_scope() as session:
        claimed = claim_attempt(session, delivery_id, lease_s=settings.webhook_lease_s)
    if claimed is None:
        log.info("webhook delivery %s is not due or is taken; skipping", delivery_id)
        return None
    # Messages republished by the sweep carry no request_id header; the claimed row names it.
    bind_request_id(claimed.request_id)

    body = claimed.body.encode()
    outcome = sender.post(
        claimed.url,
        body,
        _headers(claimed, key, body, settings),
        timeout_s=settings.webhook_timeout_s,
        allowed=settings.allowed_networks,
    )
    if outcome.accepted:
        log.info("webhook %s attempt %d delivered (%s)", delivery_id, claimed.attempt, outcome.status_code)
    else:
        log.warning("webhook %s attempt %d failed: %s", delivery_id, claimed.attempt, outcome.error)
    # A retry due soon is published with its countdown once this commits.
    with unit_of_work() as session:
        after = finish_attempt(
            session,
            claimed,
            outcome,
            retry_delays=settings.webhook_retry_delays,
            publish_within_s=COUNTDOWN_MAX_S,
        )
    return after


def _headers(claimed: Claimed, key: SigningKey, body: bytes, settings: Settings) -> dict[str, str]:
    timestamp = int(time.time())
    headers = signature_headers(
        key.private,
        request_id=str(claimed.request_id),
        user_id=claimed.user_id,
        timestamp=timestamp,
        body=body,
    )
    headers[DELIVERY_ID] = str(claimed.delivery_id)
    headers[ATTEMPT] = str(claimed.attempt)
    if claimed.timeout_type:
        headers[REQUEST_TIMEOUT_TYPE] = claimed.timeout_type
    if settings.webhook_standard_secret:
        secret = standard_secret_bytes(settings.webhook_standard_secret)
        headers.update(
            standard_headers(secret, message_id=str(claimed.delivery_id), timestamp=timestamp, body=body)
        )
    return headers
