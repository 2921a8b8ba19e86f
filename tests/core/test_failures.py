"""Failure shapes: the status codes and bodies of input and weights errors."""

from __future__ import annotations

from core import failures


def test_failure_shapes() -> None:
    bad = failures.invalid_input("nope", "image_load_error", value="http://x")
    assert bad.status_code == 422
    assert bad.body["detail"][0]["loc"] == ["body", "image_url"]
    assert failures.weights_missing("model weights not installed").body["error_type"] == "weights_error"
