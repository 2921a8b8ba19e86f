"""The service's clock: the current instant as an aware UTC datetime.

Every timestamp the service writes or compares (queued_at, leases, deadlines, retention cutoffs,
key creation) comes from here, so that none is ever naive or in local time.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
