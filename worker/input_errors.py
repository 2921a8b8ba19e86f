"""Why an input image was refused; each carries a fal-style error type and a one-line message."""

from __future__ import annotations


class InputRejected(Exception):
    error_type = "file_download_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DownloadFailed(InputRejected):
    error_type = "file_download_error"


class ForbiddenAddress(InputRejected):
    error_type = "file_download_error"


class TooLarge(InputRejected):
    error_type = "image_too_large"


class NotAnImage(InputRejected):
    error_type = "image_load_error"
