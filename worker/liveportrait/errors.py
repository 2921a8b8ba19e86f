"""Errors the engine raises for the caller to report; each message is one line a user can act on."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error caused by the request or the installation, not by a bug."""

    error_type = "engine_error"


class InvalidImageError(EngineError):
    """The input bytes are not a decodable image, or exceed the configured limits."""

    error_type = "image_load_error"


class NoFaceError(EngineError):
    """A face was required (cropping, or the safety checker) but none was found."""

    error_type = "face_not_found"


class FaceIndexError(NoFaceError):
    """`face_index` asks for a face past those found; the message names how many there are."""

    error_type = "face_index_out_of_range"


class WeightsError(EngineError):
    """The model weights are missing, or a checkpoint does not match the architecture."""

    error_type = "weights_error"
