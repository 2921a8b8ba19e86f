"""Real PostgreSQL, Redis and S3 servers as child processes, for `make run` and the tests.

process (supervision and the shared server recipe), postgres_server, redis_server, s3_server (one
per server), servers (all three as a LocalStack, and `python -m stack.servers`), localrun (the
`make run` supervisor). The names below load their module on first use instead of at import:
`python -m stack.servers` imports this package first, and an eager import here would make runpy
warn that the module it is about to run is already loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stack.postgres_server import RunningPostgres, start_postgres
    from stack.process import RunningServer, ServerSetupError, ServerStartError
    from stack.redis_server import start_redis
    from stack.s3_server import RunningS3, start_s3
    from stack.servers import LocalStack

_HOMES = {
    "LocalStack": "stack.servers",
    "RunningPostgres": "stack.postgres_server",
    "RunningS3": "stack.s3_server",
    "RunningServer": "stack.process",
    "ServerSetupError": "stack.process",
    "ServerStartError": "stack.process",
    "start_postgres": "stack.postgres_server",
    "start_redis": "stack.redis_server",
    "start_s3": "stack.s3_server",
}

__all__ = [
    "LocalStack",
    "RunningPostgres",
    "RunningS3",
    "RunningServer",
    "ServerSetupError",
    "ServerStartError",
    "start_postgres",
    "start_redis",
    "start_s3",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'stack' has no attribute {name!r}")
