"""Why a request's input was refused: the one hierarchy for input problems.

Everything that judges an input raises these: the input fetch and its address guard, the
header probe, the API's data-URI check at submit, and the engine (an image it cannot decode, no
face, a face index past those found). Each carries a fal-style error type and a one-line message
a user can act on, and the worker maps them all to the same 422 (`failures.invalid_input`).
Problems of the installation rather than the input (missing weights) are not here.
"""

from __future__ import annotations


class InputRejected(Exception):
    """Base of every input problem; `message` is the line the client sees."""

    error_type = "file_download_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DownloadFailed(InputRejected):
    """The input could not be read: a bad URL, an unresolvable host, an HTTP error, a timeout."""

    error_type = "file_download_error"


class InvalidUrl(DownloadFailed):
    """The URL itself is unusable (not http(s), no host, a bad port), whatever DNS says."""


class ForbiddenAddress(InputRejected):
    """The URL's host resolves to an address the network guard refuses."""

    error_type = "file_download_error"


class TooLarge(InputRejected):
    """More bytes or pixels than the configured limits."""

    error_type = "image_too_large"

    @classmethod
    def file(cls, size: int | str, limit: int) -> TooLarge:
        """An input file of `size` bytes (or a phrase such as "more than N") over `limit`."""
        return cls(f"image_url file is too large ({size} bytes; the limit is {limit} bytes)")


class InvalidImageError(InputRejected):
    """The bytes are not a decodable image (JPEG, PNG, WebP, HEIC), or are too large to decode safely."""

    error_type = "image_load_error"


class NoFaceError(InputRejected):
    """A face was required (cropping, or the safety checker) but none was found."""

    error_type = "face_not_found"


class FaceIndexError(NoFaceError):
    """`face_index` asks for a face past those found; the message names how many there are."""

    error_type = "face_index_out_of_range"
