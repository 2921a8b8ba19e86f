"""Worker liveness in Redis, for the worker count in /metrics and for container health checks.

A consumer bootstep writes `<QUEUE_NAME>:workers:<node name>` every WORKER_HEARTBEAT_S from the
worker's main loop (so a wedged loop stops beating), with a TTL of three periods: a worker that
died silently drops out on its own, without a table or a cleanup job.

    python -m worker.heartbeat check   # exit 0 if a worker on this host beat recently

(worker/heartbeat.py is the command's entry point; it calls main() here.)
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from celery import bootsteps

from core.config import Settings, get_settings
from queueing.queues import all_queues, webhook_queue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Beat:
    node: str
    kind: str  # edit, webhooks, or both joined with '+'
    concurrency: int
    queues: list[str]
    at: float


def key_prefix(settings: Settings) -> str:
    return f"{settings.queue_name}:workers:"


@lru_cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def kind_of(queues: list[str], settings: Settings) -> str:
    kinds = []
    if set(queues) & set(all_queues(settings)):
        kinds.append("edit")
    if webhook_queue(settings) in queues:
        kinds.append("webhooks")
    return "+".join(kinds) or "other"


def write(beat: Beat, settings: Settings) -> None:
    ttl = max(1, int(settings.worker_heartbeat_s * 3))
    _client(settings.redis_url).set(key_prefix(settings) + beat.node, json.dumps(vars(beat)), ex=ttl)


def remove(node: str, settings: Settings) -> None:
    _client(settings.redis_url).delete(key_prefix(settings) + node)


def read_all(settings: Settings) -> list[Beat]:
    client = _client(settings.redis_url)
    keys = list(client.scan_iter(match=key_prefix(settings) + "*", count=500))
    beats = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        data = json.loads(raw)
        beats.append(Beat(data["node"], data["kind"], int(data["concurrency"]), data["queues"], data["at"]))
    return beats


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Consumer bootstep: beats on the consumer's own timer, after its task queues are known."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer_ref: Any = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        queues = sorted(q.name for q in parent.task_consumer.queues)
        controller = getattr(parent, "controller", None)
        concurrency = int(getattr(controller, "concurrency", None) or settings.worker_concurrency)
        node = parent.hostname

        def beat() -> None:
            try:
                write(Beat(node, kind_of(queues, settings), concurrency, queues, time.time()), settings)
            except Exception:
                # A Redis outage must not take the worker down; the key just expires.
                log.warning("could not write the worker heartbeat", exc_info=True)

        beat()
        self._timer_ref = parent.timer.call_repeatedly(settings.worker_heartbeat_s, beat, priority=10)

    def stop(self, parent: Any) -> None:
        if self._timer_ref is not None:
            self._timer_ref.cancel()
            self._timer_ref = None
        try:
            remove(parent.hostname, get_settings())
        except Exception:
            log.warning("could not remove the worker heartbeat", exc_info=True)

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def check(settings: Settings, host: str | None = None) -> bool:
    """Whether a worker node on this host (`name@host`) beat within three periods."""
    host = host or socket.gethostname()
    limit = settings.worker_heartbeat_s * 3
    return any(
        beat.node.rpartition("@")[2] == host and time.time() - beat.at <= limit for beat in read_all(settings)
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["check"]:
        print("usage: python -m worker.heartbeat check", file=sys.stderr)
        return 2
    try:
        alive = check(get_settings())
    except redis.RedisError as exc:
        print(f"unhealthy: redis: {exc}", file=sys.stderr)
        return 1
    if not alive:
        print(f"unhealthy: no recent heartbeat from a worker on {socket.gethostname()}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
