"""The engine's one error of its own: the installation, not the input, is wrong.

Problems of the input (an undecodable image, no face) are core.input_errors, shared with the
rest of the service.
"""

from __future__ import annotations


class WeightsError(Exception):
    """The model weights are missing, or a checkpoint does not match the architecture."""

    error_type = "weights_error"
