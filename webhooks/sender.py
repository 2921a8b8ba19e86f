"""One HTTP attempt of a delivery: SSRF check, POST to the checked address, classify the answer.

The connection goes through netguard.pinned, as input downloads do. Only a 2xx counts;
redirects are not followed (a 3xx is a failure, as in Standard Webhooks), and the answer's body
is never read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from core.input_errors import DownloadFailed, ForbiddenAddress, InvalidUrl
from core.webhook_outbox import Outcome
from netguard import pinned
from netguard.addresses import IPNetwork
from webhooks.url_check import FIELD

USER_AGENT = "portrait-queue/0.1 (+webhooks)"


def post(
    url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float, allowed: Sequence[IPNetwork]
) -> Outcome:
    all_headers = {**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT}
    try:
        with pinned.client(timeout_s) as client:
            response = pinned.send(
                client, "POST", url, allowed=allowed, field=FIELD, headers=all_headers, content=body
            )
            response.close()
    except (InvalidUrl, ForbiddenAddress) as exc:  # never deliverable, whatever DNS says later
        return Outcome(None, f"refused: {exc.message}")
    except DownloadFailed as exc:  # the host does not resolve now; a later attempt may succeed
        return Outcome(None, exc.message)
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
