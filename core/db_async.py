"""The API's asyncpg pool: submit, status and result run on the event loop, one statement each.

Everything else (workers, reconciler, CLI, migrations) uses SQLAlchemy through core.db. The API's
hot paths do not: an ORM session per call, a thread-pool hop and a pre-ping round trip cost
several times what the query itself does, and they capped the API at a few hundred calls/s.

One pool per event loop (uvicorn has one per process; a test client may start several).
Connection trouble surfaces as DatabaseUnavailable, which the API answers with a 503.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from core.config import get_settings


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or the connection broke."""


# Broken or refused connections, and a pool that stays exhausted: nothing a retry by the
# client would not fix once PostgreSQL is back.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncpg.Pool] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def asyncpg_dsn(database_url: str) -> str:
    """DATABASE_URL is SQLAlchemy's form (postgresql+psycopg://...); asyncpg wants postgresql://."""
    scheme, sep, rest = database_url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


async def setup_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_state(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's RESET ALL round trip: the API never leaves session state behind
    (no LISTEN, no session-level locks or settings; its advisory lock is transaction-scoped)."""


async def _pool() -> asyncpg.Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is not None:
        return pool
    lock = _locks.setdefault(loop, asyncio.Lock())
    async with lock:
        pool = _pools.get(loop)
        if pool is None:
            settings = get_settings()
            pool = await asyncpg.create_pool(
                asyncpg_dsn(settings.database_url),
                min_size=1,
                max_size=settings.api_db_pool_size,
                init=setup_connection,
                reset=_keep_state,
                timeout=settings.api_db_connect_timeout_s,
                command_timeout=settings.api_db_command_timeout_s,
                # Idle connections are closed after a while, so a restarted PostgreSQL is met
                # with fresh ones; a connection that broke under a call is replaced on release.
                max_inactive_connection_lifetime=60,
            )
            _pools[loop] = pool
    return pool


@asynccontextmanager
async def connection() -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; connection failures (also while connecting) raise DatabaseUnavailable."""
    try:
        pool = await _pool()
        async with pool.acquire(timeout=get_settings().api_db_acquire_timeout_s) as conn:
            yield conn
    except _CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc


async def fetch_with_retry(query: str, *args: Any) -> asyncpg.Record | None:
    """One row of a read-only query; a connection that broke since its last use (PostgreSQL
    restarted) is retried once on a fresh one, so clients see no error after a restart."""
    for attempt in (1, 2):
        try:
            async with connection() as conn:
                return await conn.fetchrow(query, *args)
        except DatabaseUnavailable:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def close_pool() -> None:
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()
