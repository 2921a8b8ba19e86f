"""Standard Webhooks (standardwebhooks.com) headers, sent next to fal's Ed25519 ones when
WEBHOOK_STANDARD_SECRET is set, so that receivers with an off-the-shelf verifier need no fal code.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}` over the exact body bytes sent;
the signature is `v1,` and the base64 of its HMAC-SHA256 under the secret's decoded bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

ID = "webhook-id"
TIMESTAMP = "webhook-timestamp"
SIGNATURE = "webhook-signature"


def signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, signed_content(message_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def standard_headers(secret: bytes, *, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        ID: message_id,
        TIMESTAMP: str(timestamp),
        SIGNATURE: sign(secret, message_id, timestamp, body),
    }
