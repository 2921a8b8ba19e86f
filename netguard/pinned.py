"""HTTP requests pinned to checked addresses: the one SSRF-safe way out to a client's URL.

A request resolves the URL's host once, checks every address it resolves to
(netguard.addresses), and connects to the first of them: the Host header and the TLS name (SNI,
certificate check) stay those of the URL, so the HTTP client never looks the name up again and
a second DNS answer cannot swap in a forbidden address. A redirect that is followed is checked
in the same way, from the start, before anything is sent to it.

Input downloads (worker.fetch) and webhook deliveries (webhooks.sender) both go through here;
`field` names the URL in every error message ("image_url", "fal_webhook").
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from core.input_errors import InvalidUrl
from netguard.addresses import IPNetwork, resolve_checked

REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Target:
    """An http(s) URL taken apart: where to connect, and what to tell the server."""

    parts: SplitResult
    host: str
    port: int

    @property
    def host_header(self) -> str:
        return self.parts.netloc.rsplit("@", 1)[-1]  # credentials never go into Host

    def pinned_url(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        return self.parts._replace(netloc=f"{literal}:{self.port}").geturl()


def parse(url: str, *, field: str, schemes: str = "an http(s) URL") -> Target:
    """The URL's target; InvalidUrl if it is not http(s), has no host or has a bad port.

    `schemes` completes "`field` must be …" for the caller's own list of what it accepts."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise InvalidUrl(f"{field} must be {schemes}")
    if not parts.hostname:
        raise InvalidUrl(f"{field} has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidUrl(f"{field} has an invalid port") from exc
    return Target(parts, parts.hostname, port)


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context httpx would build for each client (certifi's CA bundle, no
    environment overrides), built once per process: loading the CA bundle costs ~30 ms, more
    than everything else a request to a nearby server does. A context holds no connections, so
    sharing it across requests (and forks) shares nothing else."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


def client(timeout: httpx.Timeout | float) -> httpx.Client:
    """A client for pinned requests: no proxies from the environment, no redirects of its own.

    Make a fresh one (and so a fresh connection pool) per URL: its connections go to pinned
    addresses, and must never be reused for another URL's host name."""
    return httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=_tls_context())


def is_redirect(response: httpx.Response) -> bool:
    return response.status_code in REDIRECTS and "location" in response.headers


def send(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    allowed: Sequence[IPNetwork],
    field: str,
    headers: Mapping[str, str],
    content: bytes | None = None,
    max_redirects: int = 0,
    schemes: str = "an http(s) URL",
) -> httpx.Response:
    """Send the request to a checked address of the URL's host, as a stream the caller closes.

    Up to `max_redirects` redirects are followed (same method and body; every hop parsed and
    checked again); a redirect beyond them is returned as the answer, for the caller to judge.
    Raises InvalidUrl, ForbiddenAddress or DownloadFailed (the host does not resolve) before
    anything is sent, and httpx's errors from the exchange itself."""
    for _ in range(max_redirects):
        response = _send_once(http, method, url, allowed, field, headers, content, schemes)
        if not is_redirect(response):
            return response
        response.close()
        url = urljoin(url, response.headers["location"])
    return _send_once(http, method, url, allowed, field, headers, content, schemes)


def _send_once(
    http: httpx.Client,
    method: str,
    url: str,
    allowed: Sequence[IPNetwork],
    field: str,
    headers: Mapping[str, str],
    content: bytes | None,
    schemes: str,
) -> httpx.Response:
    target = parse(url, field=field, schemes=schemes)
    address = resolve_checked(target.host, target.port, allowed, field=field)[0]
    request = http.build_request(
        method,
        target.pinned_url(address),
        content=content,
        headers={**headers, "Host": target.host_header},
        extensions={"sni_hostname": target.host} if target.parts.scheme == "https" else {},
    )
    return http.send(request, stream=True)
