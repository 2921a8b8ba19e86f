"""One HTTP attempt of a delivery: SSRF check, POST to the checked address, classify the answer.

Only a 2xx counts; redirects are not followed (a 3xx is a failure, as in Standard Webhooks), and
the answer's body is never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

import httpx

from core.input_errors import DownloadFailed
from core.webhook_outbox import Outcome
from webhooks.url_check import WebhookUrlRefused, parse, resolve_for_delivery
from worker.address_guard import IPNetwork

USER_AGENT = "portrait-queue/0.1 (+webhooks)"


def post(
    url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float, allowed: Sequence[IPNetwork]
) -> Outcome:
    try:
        target = parse(url)
        address = resolve_for_delivery(target, allowed)
    except WebhookUrlRefused as exc:
        return Outcome(None, f"refused: {exc}")
    except DownloadFailed as exc:
        return Outcome(None, exc.message)

    # Connect to the checked address; the Host header and TLS name stay those of the URL, so a
    # second DNS lookup (by the HTTP client) cannot swap in a forbidden address.
    literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    pinned = target.parts._replace(netloc=f"{literal}:{target.port}").geturl()
    all_headers = {
        **headers,
        "Host": target.parts.netloc.rsplit("@", 1)[-1],
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    extensions = {"sni_hostname": target.host} if target.parts.scheme == "https" else {}
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            request = client.build_request(
                "POST", pinned, content=body, headers=all_headers, extensions=extensions
            )
            response = client.send(request, stream=True)
            response.close()
    except httpx.TimeoutException:
        return Outcome(None, f"timed out after {timeout_s:g} s")
    except httpx.ConnectError as exc:
        return Outcome(None, f"connection failed: {exc}")
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(code, None)
    if 300 <= code < 400:
        return Outcome(code, f"receiver answered HTTP {code} (redirects are not followed)")
    return Outcome(code, f"receiver answered HTTP {code}")
