"""fal-style webhooks: signed (Ed25519, JWKS), retried and durable delivery of request results.

One package for all of it: the dispatcher's task (tasks.py), one attempt (deliver.py, sender.py),
signatures and keys (signing.py, keys.py), URL rules (url_check.py) and the HTTP routes
(routes.py, built by the API around its own caller dependency). The tables and the outbox stay
in core/ (core/webhook_models.py, core/webhook_outbox.py), written by the completing transaction;
publishing goes through queueing/publish.py.
"""
