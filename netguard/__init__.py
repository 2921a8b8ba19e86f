"""The network guard: which addresses a URL from a client may reach, and connections pinned to them.

Every process may import it (the worker's input fetch, webhook delivery, the API's submit-time
check of webhook URLs); it depends on core only.
"""
