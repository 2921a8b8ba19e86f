"""fal's webhook signature: Ed25519 over `request_id\nuser_id\ntimestamp\nsha256hex(body)`."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REQUEST_ID = "X-Fal-Webhook-Request-Id"
USER_ID = "X-Fal-Webhook-User-Id"
TIMESTAMP = "X-Fal-Webhook-Timestamp"
SIGNATURE = "X-Fal-Webhook-Signature"
# Not part of fal's scheme: the same on every attempt of a delivery, for receivers to deduplicate.
DELIVERY_ID = "X-Fal-Webhook-Delivery-Id"
ATTEMPT = "X-Fal-Webhook-Attempt"


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


def signature_headers(
    key: Ed25519PrivateKey, *, request_id: str, user_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    stamp = str(timestamp)
    signature = key.sign(signed_message(request_id, user_id, stamp, body))
    return {REQUEST_ID: request_id, USER_ID: user_id, TIMESTAMP: stamp, SIGNATURE: signature.hex()}
