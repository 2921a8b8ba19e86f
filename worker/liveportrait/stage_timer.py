"""Per-item bookkeeping of an edit: stage timings, the log, the cancellation check, the trace."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

LogFn = Callable[[str], None]
CheckFn = Callable[[], None]
# Optional record of every stage (the face kit's array names) for conformance checks and the
# command line's --trace; None on the service's path.
Trace = dict[str, Any] | None


class StageTimer:
    """One item's stage timings, log, cancellation check and optional trace."""

    def __init__(self, log: LogFn | None, check: CheckFn | None, trace: Trace = None) -> None:
        self.timings: dict[str, float] = {}
        self.log = log
        self.check = check
        self.trace = trace

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.check is not None:
            self.check()
        start = time.perf_counter()
        yield
        self.record(name, time.perf_counter() - start)

    def record(self, name: str, elapsed: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + elapsed
        if self.log is not None:
            self.log(f"{name}: {elapsed * 1000:.0f} ms")
