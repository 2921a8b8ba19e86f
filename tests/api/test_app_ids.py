"""Endpoint ids: the path forms fal's clients send, and the owner/alias an id needs."""

from __future__ import annotations

import pytest

from api.app_ids import AppId


@pytest.mark.parametrize(
    ("endpoint", "full", "base"),
    [
        ("fal-ai/live-portrait/image", "fal-ai/live-portrait/image", "fal-ai/live-portrait"),
        ("/fal-ai/live-portrait/", "fal-ai/live-portrait", "fal-ai/live-portrait"),
        ("workflows/me/flow/sub", "workflows/me/flow/sub", "workflows/me/flow"),
    ],
)
def test_app_id_paths(endpoint: str, full: str, base: str) -> None:
    app = AppId.parse(endpoint)
    assert (app.full, app.queue_base) == (full, base)


def test_app_id_needs_owner_and_alias() -> None:
    with pytest.raises(ValueError):
        AppId.parse("comfy/only")
