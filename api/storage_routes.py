"""fal's REST storage API (`rest.fal.ai`), backed by the service's S3 bucket.

- `POST /storage/upload/initiate` → `{upload_url, file_url}`; the client PUTs the bytes to
  `upload_url`, a signed URL of this service that checks the limits and writes into S3.
- `POST /storage/upload/initiate-multipart` → the same shape; the JS client then PUTs
  `<upload_url path>/<n>?<query>` (answered with `{partNumber, etag}`) and POSTs
  `<upload_url path>/complete?<query>` with the parts.
- `POST /storage/auth/token` → the bearer token fal-client uses on the CDN routes
  (api/cdn_routes.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require_key
from api.public_url import public_base_url
from api.upload_io import (
    CDN_TOKEN_PURPOSE,
    UploadContext,
    read_body,
    replies_rejections,
    upload_context,
)
from storage.signing import make_token, sign, verify
from storage.uploads import UploadRejected, clean_content_type, new_upload_key, safe_file_name

PUT_PURPOSE = "upload-put"
MULTIPART_PURPOSE = "upload-multipart"
SINGLE_PUT_PATH = "/storage/upload/object"
MULTIPART_PATH = "/storage/upload/multipart"

router = APIRouter(tags=["storage"])

StorageType = Annotated[
    str | None, Query(description="Accepted and ignored (fal-cdn-v3, gcs): there is one store.")
]


class InitiateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    file_name: str | None = None
    content_type: str | None = None


class InitiateResponse(BaseModel):
    upload_url: str
    file_url: str


class PartRef(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    part_number: int = Field(alias="partNumber", ge=1)
    etag: str


class CompleteBody(BaseModel):
    parts: list[PartRef] = Field(min_length=1)


class TokenResponse(BaseModel):
    token: str
    token_type: str
    base_url: str
    expires_at: str


def _expiry(ctx: UploadContext) -> int:
    return int(time.time()) + ctx.settings.upload_url_expires_s


def _new_key(ctx: UploadContext, body: InitiateBody) -> tuple[str, str]:
    content_type = clean_content_type(body.content_type)
    ctx.policy.check_content_type(content_type)
    return new_upload_key(safe_file_name(body.file_name, content_type)), content_type


def _check_signature(ctx: UploadContext, purpose: str, expires: int, signature: str, *fields: str) -> None:
    if not verify(ctx.secret, purpose, expires, signature, *fields):
        raise UploadRejected(403, "the upload URL is invalid or has expired")


@router.post(
    "/storage/upload/initiate",
    response_model=InitiateResponse,
    dependencies=[Depends(require_key)],
    summary="Start an upload: PUT the bytes to upload_url, then use file_url",
)
@replies_rejections
async def initiate(request: Request, body: InitiateBody, storage_type: StorageType = None) -> Response:
    ctx = upload_context()
    key, content_type = _new_key(ctx, body)
    upload_url = _signed_url(request, ctx, SINGLE_PUT_PATH, PUT_PURPOSE, key, "content_type", content_type)
    return JSONResponse({"upload_url": upload_url, "file_url": ctx.uploads.file_url(key)})


def _signed_url(
    request: Request, ctx: UploadContext, path: str, purpose: str, key: str, name: str, value: str
) -> str:
    """A service URL for `path` carrying the key, one more signed field and an expiry."""
    expires = _expiry(ctx)
    signature = sign(ctx.secret, purpose, expires, key, value)
    query = urlencode({"key": key, name: value, "expires": expires, "signature": signature})
    return f"{public_base_url(request)}{path}?{query}"


@router.put(SINGLE_PUT_PATH, summary="The upload_url of /storage/upload/initiate")
@replies_rejections
async def put_object(
    request: Request,
    key: Annotated[str, Query()],
    content_type: Annotated[str, Query()],
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query()],
) -> Response:
    ctx = upload_context()
    _check_signature(ctx, PUT_PURPOSE, expires, signature, key, content_type)
    data = await read_body(request, ctx.policy.max_bytes)
    # The type signed at initiate wins over the PUT's header: that is the type that was checked.
    await run_in_threadpool(ctx.uploads.put, key, data, content_type)
    return JSONResponse({"file_url": ctx.uploads.file_url(key)})


@router.post(
    "/storage/upload/initiate-multipart",
    response_model=InitiateResponse,
    dependencies=[Depends(require_key)],
    summary="Start a multipart upload: PUT parts to <upload_url>/<n>, then POST <upload_url>/complete",
)
@replies_rejections
async def initiate_multipart(
    request: Request, body: InitiateBody, storage_type: StorageType = None
) -> Response:
    ctx = upload_context()
    key, content_type = _new_key(ctx, body)
    s3_upload_id = await run_in_threadpool(ctx.uploads.start_multipart, key, content_type)
    upload_url = _signed_url(request, ctx, MULTIPART_PATH, MULTIPART_PURPOSE, key, "upload_id", s3_upload_id)
    return JSONResponse({"upload_url": upload_url, "file_url": ctx.uploads.file_url(key)})


@router.post(f"{MULTIPART_PATH}/complete", summary="Finish a multipart upload")
@replies_rejections
async def complete_multipart(
    body: CompleteBody,
    key: Annotated[str, Query()],
    upload_id: Annotated[str, Query()],
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query()],
) -> Response:
    ctx = upload_context()
    _check_signature(ctx, MULTIPART_PURPOSE, expires, signature, key, upload_id)
    parts = [(part.part_number, part.etag) for part in body.parts]
    await run_in_threadpool(ctx.uploads.complete, key, upload_id, parts, ctx.policy)
    return JSONResponse({"file_url": ctx.uploads.file_url(key)})


@router.put(MULTIPART_PATH + "/{part_number}", summary="One part of a multipart upload")
@replies_rejections
async def put_part(
    request: Request,
    part_number: int,
    key: Annotated[str, Query()],
    upload_id: Annotated[str, Query()],
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query()],
) -> Response:
    ctx = upload_context()
    _check_signature(ctx, MULTIPART_PURPOSE, expires, signature, key, upload_id)
    data = await read_body(request, ctx.policy.max_bytes)
    etag = await run_in_threadpool(ctx.uploads.put_part, key, upload_id, part_number, data)
    # The JS client reads the JSON body; an ETag header costs nothing and matches S3.
    return JSONResponse({"partNumber": part_number, "etag": etag}, headers={"ETag": etag})


@router.post(
    "/storage/auth/token",
    response_model=TokenResponse,
    dependencies=[Depends(require_key)],
    summary="A bearer token for the /files upload routes",
)
@replies_rejections
async def auth_token(request: Request, storage_type: StorageType = None) -> Response:
    ctx = upload_context()
    token, expires_at = make_token(ctx.secret, CDN_TOKEN_PURPOSE, ctx.settings.upload_url_expires_s)
    # fal-client parses expires_at with fromisoformat and compares it to an aware UTC time.
    expires_iso = datetime.fromtimestamp(expires_at, UTC).isoformat()
    return JSONResponse(
        {
            "token": token,
            "token_type": "Bearer",
            "base_url": public_base_url(request),
            "expires_at": expires_iso,
        }
    )
