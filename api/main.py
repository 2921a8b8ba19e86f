"""ASGI entry point: `uvicorn api.main:app`."""

from __future__ import annotations

from api.app import create_app
from core.logging_setup import configure_logging

# After uvicorn configured its loggers (it imports this module later), so they join ours.
configure_logging()

app = create_app()
