"""Endpoint ids and the URL paths fal's clients derive from them.

Submit goes to the full id (`fal-ai/live-portrait/image`); status, result and cancel go to the
owner/alias only (`fal-ai/live-portrait/requests/…`), one segment deeper for the `workflows` and
`comfy` namespaces.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACES = frozenset({"workflows", "comfy"})


@dataclass(frozen=True)
class AppId:
    full: str  # submit path, e.g. "fal-ai/live-portrait/image"
    queue_base: str  # request paths live under this, e.g. "fal-ai/live-portrait"

    @classmethod
    def parse(cls, endpoint_id: str) -> AppId:
        parts = [p for p in endpoint_id.strip().strip("/").split("/") if p]
        owner_at = 1 if parts and parts[0] in NAMESPACES else 0
        if len(parts) < owner_at + 2:
            raise ValueError(f"endpoint id {endpoint_id!r} must be owner/alias[/path]")
        return cls(full="/".join(parts), queue_base="/".join(parts[: owner_at + 2]))
