"""A small HTTP server of test images on loopback, with the redirects the fetch tests follow."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageServer:
    base: str
    root: Path

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _Handler(http.server.SimpleHTTPRequestHandler):
    redirects: dict[str, str] = {}

    def do_GET(self) -> None:
        target = self.redirects.get(self.path)
        if target is not None:
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve_images(root: Path, redirects: dict[str, str]) -> Iterator[ImageServer]:
    """Serve the files under `root`; a GET of a path in `redirects` answers 302 to its target."""
    _Handler.redirects = redirects
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ImageServer(f"http://127.0.0.1:{server.server_address[1]}", root)
    finally:
        server.shutdown()
