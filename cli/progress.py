"""Progress on stderr while a request waits and runs: queue position, a bar, the latest log line.

On a terminal one line is redrawn in place; otherwise (CI logs, pipes) a line is printed per
change, so the output stays readable when captured.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

# About how many log lines one edit writes (fetch, probe, engine stages, store): the bar's
# scale. Only the display depends on it; the end is always the COMPLETED status.
EXPECTED_LOG_LINES = 13
BAR_WIDTH = 24


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = self._stream.isatty()
        self._lines = 0
        self._latest = ""
        self._last_text = ""
        self._started = time.monotonic()

    def update(self, status: dict[str, Any]) -> None:
        if not self._enabled:
            return
        logs = status.get("logs") or []
        self._lines += len(logs)
        if logs:
            self._latest = str(logs[-1].get("message", ""))
        text = self._render(status)
        if text != self._last_text:
            self._show(text)

    def finish(self, message: str) -> None:
        if not self._enabled:
            return
        if self._tty:
            self._stream.write("\r\033[K")
        self._stream.write(message + "\n")
        self._stream.flush()

    def _render(self, status: dict[str, Any]) -> str:
        elapsed = f"{time.monotonic() - self._started:5.1f}s"
        state = status.get("status")
        if state == "IN_QUEUE":
            return f"{elapsed} queued, position {status.get('queue_position', 0)}"
        fraction = 1.0 if state == "COMPLETED" else min(0.95, self._lines / EXPECTED_LOG_LINES)
        filled = int(fraction * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        tail = f" {self._latest}" if self._latest else ""
        word = "running" if state == "IN_PROGRESS" else "done"
        return f"{elapsed} {word} [{bar}] {fraction:4.0%}{tail}"

    def _show(self, text: str) -> None:
        self._last_text = text
        if self._tty:
            self._stream.write("\r\033[K" + text[:120])
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
