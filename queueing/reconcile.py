"""The reconciler: makes PostgreSQL and the broker agree again after anything was lost.

- a waiting request whose message was never published (broker down at submit) or may have been
  lost (Redis restarted without persistence) is published again;
- a running request whose worker stopped renewing its lease (killed, machine gone) is put back
  in the queue, or fails with runner_disconnected once it has used up MAX_ATTEMPTS, or at once
  if it was submitted with X-Fal-No-Retry;
- a waiting request whose X-Fal-Request-Timeout passed fails with request_timeout;
- a webhook delivery that is due with no message in flight (never published, or its dispatcher
  died mid-attempt) is published again;
- an ended X-Fal-Store-IO: 0 request whose input is still there (its ending process could not
  drop it) loses it, stored object included.

Duplicate messages are harmless: only one claim in PostgreSQL can succeed. Several reconcilers
may run (one per API process); an advisory lock lets one of them work per round.

Run standalone with `python -m worker.reconcile` (the entry point in worker/ calls main() here).
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass

from sqlalchemy import func, select

from core import failures
from core.config import Settings, get_settings
from core.requests_table import (
    expire_unstarted,
    fail_no_retry_expired,
    find_stale,
    give_up_expired,
    requeue_expired,
)
from core.webhook_outbox import find_due
from queueing.publish import publish, publish_delivery, unit_of_work
from storage.inputs import forget_inputs_once
from storage.s3 import get_store

log = logging.getLogger(__name__)

_LOCK_KEY = 0x706F7274  # arbitrary, constant: "port"
# A request row committed this recently may still be waiting in the API's background publisher.
REQUEST_PUBLISH_GRACE_S = 10.0


@dataclass(frozen=True)
class Round:
    republished: int = 0
    requeued: int = 0
    webhooks: int = 0
    inputs_forgotten: int = 0


def reconcile_once(settings: Settings) -> Round:
    # Failing requests makes their webhook deliveries ready: published once this commits.
    with unit_of_work() as session:
        locked = session.execute(select(func.pg_try_advisory_xact_lock(_LOCK_KEY))).scalar_one()
        if not locked:
            return Round()
        stale = find_stale(
            session, publish_grace_s=REQUEST_PUBLISH_GRACE_S, republish_after_s=settings.republish_after_s
        )
        exhausted = [
            rid
            for rid in stale.lease_expired
            if fail_no_retry_expired(session, rid, failures.runner_disconnected())
            or give_up_expired(
                session, rid, failures.runner_lost(settings.max_attempts), max_attempts=settings.max_attempts
            )
        ]
        requeued = [
            (rid, requeue_expired(session, rid)) for rid in stale.lease_expired if rid not in exhausted
        ]
        timed_out = expire_unstarted(session, failures.start_timeout())
        due_webhooks = find_due(session, republish_after_s=settings.republish_after_s)
    to_publish = stale.unpublished + [(rid, p) for rid, p in requeued if p is not None]
    published = sum(publish(rid, priority) for rid, priority in to_publish)
    if exhausted or timed_out:
        log.info(
            "reconciler: failed %d lost (out of attempts or X-Fal-No-Retry), %d past their start timeout",
            len(exhausted),
            timed_out,
        )
    if to_publish:
        log.info("reconciler: published %d of %d, requeued %d", published, len(to_publish), len(requeued))
    webhooks = sum(publish_delivery(delivery_id) for delivery_id in due_webhooks)
    if due_webhooks:
        log.info("reconciler: published %d of %d due webhook deliveries", webhooks, len(due_webhooks))
    return Round(
        republished=published,
        requeued=sum(p is not None for _, p in requeued),
        webhooks=webhooks,
        inputs_forgotten=_forget_inputs(settings),
    )


def _forget_inputs(settings: Settings) -> int:
    """The X-Fal-Store-IO: 0 backstop, outside the round's locked transaction (its batches lock
    their own rows). An S3 outage must not stop the repairs above: the rows wait for a round
    that can reach the bucket."""
    try:
        return forget_inputs_once(get_store(), settings.sweep_batch_size)
    except Exception:
        log.exception("reconciler: could not drop the inputs of ended X-Fal-Store-IO: 0 requests")
        return 0


def run_forever(settings: Settings, stop: threading.Event) -> None:
    while not stop.wait(settings.reconcile_interval_s):
        try:
            reconcile_once(settings)
        except Exception:
            log.exception("reconciler round failed; retrying next round")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if args.once:
        print(reconcile_once(settings))
        return
    stop = threading.Event()
    try:
        run_forever(settings, stop)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
