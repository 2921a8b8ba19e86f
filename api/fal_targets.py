"""Which fal URLs the client proxy serves, and the local path each one maps to.

The allow-list mirrors `@fal-ai/server-proxy`'s: the queue and run hosts, and fal's storage
endpoints; everything else is refused. Queue and run paths may not reach the service's own
non-model routes (storage, files, health, the proxy itself) through a model host.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from api.run_routes import RUN_PREFIX

QUEUE_HOSTS = frozenset({"queue.fal.run", "queue.falrun.com"})
RUN_HOSTS = frozenset({"fal.run", "falrun.com"})
REST_HOSTS = frozenset({"rest.fal.ai", "rest.alpha.fal.ai"})
CDN_HOSTS = frozenset({"v3.fal.media", "v3b.fal.media", "fal.media"})
REST_PATHS = frozenset(
    {"/storage/upload/initiate", "/storage/upload/initiate-multipart", "/storage/auth/token"}
)
CDN_PATHS = frozenset({"/files/upload", "/files/upload/multipart"})
_NOT_MODEL_PREFIXES = ("/storage/", "/files/", "/api/", "/run/", "/healthz", "/readyz", "/docs", "/openapi")


@dataclass(frozen=True)
class LocalTarget:
    path: str
    query: str


def local_target(target_url: str) -> LocalTarget | None:
    """The local path and query serving `target_url`, or None when it is not allowed."""
    try:
        parts = urlsplit(target_url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "https" or port not in (None, 443) or parts.username or parts.password:
        return None
    path = parts.path or "/"
    # No dot segments or empty segments: the mapped path must name what it appears to name.
    if any(segment in {".", ".."} for segment in path.split("/")) or "//" in path:
        return None
    if host in QUEUE_HOSTS and _is_model_path(path):
        return LocalTarget(path, parts.query)
    if host in RUN_HOSTS and _is_model_path(path):
        return LocalTarget(RUN_PREFIX + path, parts.query)
    if host in REST_HOSTS and path in REST_PATHS:
        return LocalTarget(path, parts.query)
    if host in CDN_HOSTS and path in CDN_PATHS:
        return LocalTarget(path, parts.query)
    return None


def _is_model_path(path: str) -> bool:
    return path.count("/") >= 2 and not path.startswith(_NOT_MODEL_PREFIXES)
