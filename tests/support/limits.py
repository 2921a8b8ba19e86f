"""The input and upload limits the session's service runs with (service_env sets them), for the
tests that probe just past them."""

from __future__ import annotations

MAX_INPUT_BYTES = 2_000_000
MAX_INPUT_PIXELS = 4_000_000
UPLOAD_MAX_BYTES = 8 * 1024 * 1024
