"""Real PostgreSQL, Redis and S3 servers as child processes, for `make run` and the tests.

The names below load stack.servers on first use instead of at import: `python -m stack.servers`
imports this package first, and an eager import here would make runpy warn that the module it is
about to run is already loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stack.servers import (
        LocalStack,
        RunningPostgres,
        RunningS3,
        RunningServer,
        ServerSetupError,
        ServerStartError,
        start_postgres,
        start_redis,
        start_s3,
    )

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
    if name in __all__:
        return getattr(importlib.import_module("stack.servers"), name)
    raise AttributeError(f"module 'stack' has no attribute {name!r}")
