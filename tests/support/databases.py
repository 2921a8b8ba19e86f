"""Databases for tests that need one of their own, and the reconciler's lock held for a test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def empty_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database with no schema on the server of `server_url`; dropped afterwards (FORCE:
    a test's leftover connections do not keep it)."""
    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def reconciler_paused() -> Iterator[None]:
    """Hold the reconciler's advisory lock: no API process of the session then requeues,
    publishes or sweeps what a test leaves in an odd state on purpose."""
    from core.db import get_engine
    from queueing.reconcile import _LOCK_KEY

    with get_engine().connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            conn.commit()
