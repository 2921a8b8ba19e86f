"""The model, loaded once per worker process (after the fork, never in the Celery parent)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.config import Settings
from worker.liveportrait.errors import WeightsError

if TYPE_CHECKING:
    from worker.liveportrait.engine import Engine

log = logging.getLogger(__name__)

_engine: Engine | None = None
_load_error: WeightsError | None = None


def load(settings: Settings) -> None:
    """Load the engine; a load failure is remembered and reported by every request."""
    global _engine, _load_error
    try:
        # Imported here: torch must not be imported (let alone CUDA touched) before the fork.
        from worker.liveportrait.engine import Engine

        _engine = Engine.load(
            settings.weights_dir,
            device=None if settings.device == "auto" else settings.device,
            half=settings.half_precision,
            threads=settings.torch_threads,
            arch=settings.engine_arch,
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
    if _engine is None and _load_error is None:
        load(settings)  # outside a prefork child (solo pool, tests): load lazily
    if _engine is None:
        raise _load_error or WeightsError("model weights not installed")
    return _engine
