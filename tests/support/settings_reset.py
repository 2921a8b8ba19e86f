"""Forget every cached settings-derived object after the environment changed (tests only)."""

from __future__ import annotations


def reset_cached_settings() -> None:
    from core.config import get_settings
    from core.db import reset_engine
    from storage.s3 import get_store

    get_settings.cache_clear()
    reset_engine()
    get_store.cache_clear()
