"""A real webhook receiver for tests (threaded http.server on 127.0.0.1), scripted per path, and a
signature check written from fal's description alone (not with the service's own code)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass(frozen=True)
class Hang:
    """Answer 200 only after this long (the sender has given up by then)."""

    seconds: float


Action = int | Hang


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    answered: int | None  # None: hung past the sender's timeout


class Receiver:
    def __init__(self) -> None:
        self._plans: dict[str, list[Action]] = {}
        self._then: dict[str, Action] = {}
        self._received: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                action = receiver._next_action(self.path)
                headers = {name.lower(): value for name, value in self.headers.items()}
                answered = action if isinstance(action, int) else None
                receiver._record(Received(self.path, headers, body, answered))
                if isinstance(action, Hang):
                    time.sleep(action.seconds)
                    action = 200
                try:
                    self.send_response(action)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender hung up (timed out, or was killed)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def plan(self, path: str, actions: list[Action], then: Action = 200) -> None:
        with self._changed:
            self._plans[path] = list(actions)
            self._then[path] = then

    def _next_action(self, path: str) -> Action:
        with self._changed:
            queue = self._plans.get(path, [])
            return queue.pop(0) if queue else self._then.get(path, 200)

    def _record(self, received: Received) -> None:
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()

    def received(self, path: str) -> list[Received]:
        with self._changed:
            return [r for r in self._received if r.path == path]

    def accepted(self, path: str) -> list[Received]:
        return [r for r in self.received(path) if r.answered is not None and 200 <= r.answered < 300]

    def wait_for(self, path: str, *, count: int = 1, accepted: bool = False, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                got = self.accepted(path) if accepted else self.received(path)
                if len(got) >= count:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: {len(got)} of {count} deliveries after {timeout} s")
                self._changed.wait(left)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def signature_valid(received: Received, jwks: dict[str, Any], *, tolerance_s: float = 300) -> bool:
    """What a receiver does: rebuild the signed message, check freshness, try every JWKS key."""
    h = received.headers
    timestamp = h["x-fal-webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    message = "\n".join(
        [
            h["x-fal-webhook-request-id"],
            h["x-fal-webhook-user-id"],
            timestamp,
            hashlib.sha256(received.body).hexdigest(),
        ]
    ).encode()
    signature = bytes.fromhex(h["x-fal-webhook-signature"])
    for key in jwks["keys"]:
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["kid"]
        public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
        try:
            public.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False
