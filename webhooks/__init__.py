"""fal-style webhooks: signed (Ed25519, JWKS), retried and durable delivery of request results."""
