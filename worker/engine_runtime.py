"""The model, loaded once per worker process (after the fork, never in the Celery parent)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from core.config import Settings
from worker.liveportrait.errors import WeightsError

if TYPE_CHECKING:
    from worker.liveportrait.engine import Engine

log = logging.getLogger(__name__)

_engine: Engine | None = None
_load_error: WeightsError | None = None
_last_attempt = 0.0
# After a failed load, a request tries again at most this often, so weights installed after the
# worker started are picked up without a restart.
RETRY_LOAD_AFTER_S = 30.0


def load(settings: Settings) -> None:
    """Load the engine; a load failure is remembered and reported by every request."""
    global _engine, _load_error, _last_attempt
    _last_attempt = time.monotonic()
    try:
        if settings.weights_s3_uri:
            from storage.s3 import s3_client
            from worker.weights_sync import sync_from_s3

            fetched = sync_from_s3(settings.weights_s3_uri, settings.weights_dir, s3_client(settings))
            if fetched:
                log.info("fetched %s from %s", ", ".join(fetched), settings.weights_s3_uri)
        # Imported here: torch must not be imported (let alone CUDA touched) before the fork.
        from worker.liveportrait.engine import Engine

        _engine = Engine.load(
            settings.weights_dir,
            device=None if settings.device == "auto" else settings.device,
            half=settings.half_precision,
            threads=settings.torch_threads,
            arch=settings.engine_arch,
            cache_size=settings.prepared_cache_size,
            compile_networks=settings.torch_compile,
        )
        _load_error = None
        log.info("engine loaded from %s (arch %s)", settings.weights_dir, settings.engine_arch)
    except WeightsError as exc:
        _engine, _load_error = None, exc
        log.error("engine not loaded: %s", exc)
    except ImportError as exc:
        _engine, _load_error = None, WeightsError(f"the engine could not be imported: {exc}")
        log.error("engine not loaded: %s", exc)


def get(settings: Settings) -> Engine:
    if _engine is None and (_load_error is None or time.monotonic() - _last_attempt > RETRY_LOAD_AFTER_S):
        load(settings)  # first use outside a prefork child (solo pool, tests), or a retry
    if _engine is None:
        raise _load_error or WeightsError("model weights not installed")
    return _engine
