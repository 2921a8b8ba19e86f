"""Request inputs sent inline: data URIs, and the bucket objects that keep large ones.

A data URI is decoded here, by the API at submit and by the worker at fetch. A large one's bytes
are kept in the bucket instead of the row: the row's `input.image_url` then holds
storage.layout.input_ref(key), a few dozen characters, so that the row stays small whatever the
image's size; the worker reads the object through the S3 API and the result sweep deletes it
with the outputs. Clients cannot send such a reference themselves: api.schemas accepts only
http(s) URLs and data URIs as image_url.

A request submitted with X-Fal-Store-IO: 0 keeps no input once it ended: the process that ended
it deletes the object and clears the row's input right after its commit (`forget_input`), and
`forget_inputs_once`, run by every reconciler round, does it for the rows whose ending process
could not (the API's cancel, the reconciler's own failures, a crash or S3 error in between).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from botocore.exceptions import ClientError

from core.db import session_scope
from core.input_errors import DownloadFailed, TooLarge
from core.requests_table import claim_unforgotten_inputs, forget_inputs
from storage.layout import INPUT_REF_PREFIX, input_key, input_ref, key_of_ref, random_name
from storage.s3 import ObjectStore

# Data URIs up to this many characters stay in the row: a small icon costs the row less than
# a round trip to the bucket costs the submit, and the row stays far under 8 KB with it.
INLINE_MAX_CHARS = 2048

# A media type S3 accepts as Content-Type; a data URI's header can hold anything else.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]{0,63}/[A-Za-z0-9][\w.+-]{0,63}")
_FALLBACK_TYPE = "application/octet-stream"


class StoredInputMissing(Exception):
    """The object a stored-input reference names is gone (expired with the result, or deleted)."""


def is_data_uri(url: str) -> bool:
    return url[:5].lower() == "data:"  # schemes are case-insensitive (RFC 3986)


@dataclass(frozen=True)
class DataUri:
    data: bytes
    media_type: str  # as the URI's header names it, unchecked; "" when it names none


def decode_data_uri(uri: str, max_bytes: int) -> DataUri:
    """The bytes of a data URI (base64 or percent-encoded). The API decodes with this at submit
    and the worker at fetch, so that a URI refused at submit is a 422 there, with the message
    the worker would report."""
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise DownloadFailed("image_url is a malformed data URI (no comma)")
    # Base64 grows data by 4/3: refuse before decoding anything far beyond the limit.
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise TooLarge.file(len(payload) * 3 // 4, max_bytes)
    if header.endswith(";base64"):
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise DownloadFailed("image_url is a data URI with invalid base64") from exc
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise TooLarge.file(len(data), max_bytes)
    return DataUri(data, header.split(";", 1)[0].strip())


def is_ref(image_url: str) -> bool:
    return image_url.startswith(INPUT_REF_PREFIX)


def content_type_for(media_type: str) -> str:
    return media_type.lower() if _MEDIA_TYPE.fullmatch(media_type) else _FALLBACK_TYPE


def put_input(store: ObjectStore, request_id: uuid.UUID, data: bytes, media_type: str) -> str:
    """Write the input and return the reference to keep in the row (blocking: call off the loop)."""
    key = input_key(request_id, random_name())
    store.put(key, data, content_type_for(media_type))
    return input_ref(key)


def delete_input(store: ObjectStore, ref: str) -> None:
    """Remove the object a stored-input reference names (an input whose row was never inserted,
    or whose X-Fal-Store-IO: 0 request ended); anything else names no object and is ignored.
    Blocking: call off the loop."""
    key = key_of_ref(ref)
    if key is not None:
        store.client.delete_object(Bucket=store.bucket, Key=key)


def read_input(store: ObjectStore, image_url: str, *, max_bytes: int) -> bytes:
    """The bytes a reference names; StoredInputMissing if the object no longer exists."""
    key = key_of_ref(image_url) or ""
    try:
        data, _ = store.get(key, max_bytes=max_bytes)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            raise StoredInputMissing(key) from exc
        raise
    return data


def forget_input(store: ObjectStore, request_id: uuid.UUID, image_url: str | None) -> None:
    """Drop the input of an ended X-Fal-Store-IO: 0 request: its stored object first, then the
    row's copy, so that a failure in between leaves the row for `forget_inputs_once`."""
    if image_url is not None:
        delete_input(store, image_url)
    with session_scope() as session:
        forget_inputs(session, [request_id])


def forget_inputs_once(store: ObjectStore, limit: int) -> int:
    """One batch of the backstop; returns how many rows lost their input. The rows stay locked
    while their objects are deleted, so concurrent rounds take disjoint batches, and a round
    that dies before its commit leaves them for the next (deleting a missing object is harmless)."""
    with session_scope() as session:
        due = claim_unforgotten_inputs(session, limit, input_ref_prefix=INPUT_REF_PREFIX)
        store.delete_keys(item.input_key for item in due if item.input_key)
        return forget_inputs(session, [item.request_id for item in due])
