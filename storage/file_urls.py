"""Service file URLs: `<service base>/files/<upload key>`, served by the API.

fal-client's multipart upload builds its part URLs from the file URL it is handed
(`<access_url>/multipart/<id>/<n>`), so for those uploads the file URL must be one of ours
rather than a presigned S3 URL. The worker recognises the path on any host: the service cannot
know every name it is reached under, and the random uuid, not the host, is what selects the file.
"""

from __future__ import annotations

import re

from storage.layout import UPLOADS

FILES_ROUTE = "/files"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The shard folder is optional: uploads made before keys were sharded keep their URLs.
_SERVICE_FILE_PATH = re.compile(rf"{FILES_ROUTE}/({re.escape(UPLOADS)}(?:[0-9a-f]{{2}}/)?{_UUID}/[^/]+)$")


def key_from_service_path(path: str) -> str | None:
    """The upload key named by a service file URL's path, else None."""
    match = _SERVICE_FILE_PATH.search(path)
    return match.group(1) if match else None


def is_upload_key(key: str) -> bool:
    return key_from_service_path(f"{FILES_ROUTE}/{key}") == key


def service_file_url(base: str, key: str) -> str:
    return f"{base.rstrip('/')}{FILES_ROUTE}/{key}"
