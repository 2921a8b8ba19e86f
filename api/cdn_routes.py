"""fal's CDN upload API (`v3.fal.media`), the one fal-client uses by default.

- `POST /files/upload` (raw bytes, `Content-Type`, `X-Fal-File-Name`) → `{access_url}`.
- `POST /files/upload/multipart` → `{access_url, uploadId}`; fal-client then PUTs
  `<access_url>/multipart/<uploadId>/<n>` (it reads the `ETag` header) and POSTs
  `<access_url>/multipart/<uploadId>/complete`, and returns `access_url` itself as the file's URL.
  So for multipart uploads `access_url` is a service file URL, served by `GET /files/<key>`.

Auth: the bearer token from `POST /storage/auth/token` (or an API key) when API_KEYS is set.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api.public_url import public_base_url
from api.storage_routes import CompleteBody
from api.upload_io import UploadContext, read_body, replies_rejections, require_upload_auth, upload_context
from storage.file_urls import FILES_ROUTE, is_upload_key, service_file_url
from storage.uploads import UploadRejected, clean_content_type, new_upload_key, safe_file_name

router = APIRouter(tags=["storage"])

OptionalHeader = Annotated[str | None, Header(include_in_schema=False)]


def _encode_upload_id(s3_upload_id: str) -> str:
    # S3 upload ids may hold characters that do not survive a bare path segment.
    return base64.urlsafe_b64encode(s3_upload_id.encode()).rstrip(b"=").decode()


def _decode_upload_id(upload_id: str) -> str:
    try:
        return base64.urlsafe_b64decode(upload_id + "=" * (-len(upload_id) % 4)).decode()
    # ValueError: non-ASCII characters in the id (found by the fuzzer; binascii.Error is one too).
    except (ValueError, UnicodeDecodeError):
        raise UploadRejected(404, "unknown multipart upload") from None


def _upload_key(key: str) -> str:
    if not is_upload_key(key):
        raise UploadRejected(404, "no such file")
    return key


async def _accept_upload(
    ctx: UploadContext, authorization: str | None, content_type: str | None, file_name: str | None
) -> tuple[str, str]:
    """Auth and content-type checks of both upload routes; the new upload's key and type."""
    await require_upload_auth(ctx, authorization)
    media_type = clean_content_type(content_type)
    ctx.policy.check_content_type(media_type)
    return new_upload_key(safe_file_name(file_name, media_type)), media_type


@router.post(f"{FILES_ROUTE}/upload", summary="Upload a file in one request")
@replies_rejections
async def upload(
    request: Request,
    authorization: OptionalHeader = None,
    content_type: OptionalHeader = None,
    x_fal_file_name: OptionalHeader = None,
) -> Response:
    ctx = upload_context()
    key, media_type = await _accept_upload(ctx, authorization, content_type, x_fal_file_name)
    data = await read_body(request, ctx.policy.max_bytes)
    await run_in_threadpool(ctx.uploads.put, key, data, media_type)
    return JSONResponse({"access_url": ctx.uploads.file_url(key)})


@router.post(f"{FILES_ROUTE}/upload/multipart", summary="Start a multipart upload")
@replies_rejections
async def start_multipart(
    request: Request,
    authorization: OptionalHeader = None,
    content_type: OptionalHeader = None,
    x_fal_file_name: OptionalHeader = None,
) -> Response:
    ctx = upload_context()
    key, media_type = await _accept_upload(ctx, authorization, content_type, x_fal_file_name)
    s3_upload_id = await run_in_threadpool(ctx.uploads.start_multipart, key, media_type)
    return JSONResponse(
        {
            "access_url": service_file_url(public_base_url(request), key),
            "uploadId": _encode_upload_id(s3_upload_id),
        }
    )


@router.put(FILES_ROUTE + "/{key:path}/multipart/{upload_id}/{part_number}", summary="One part")
@replies_rejections
async def put_part(
    request: Request, key: str, upload_id: str, part_number: int, authorization: OptionalHeader = None
) -> Response:
    ctx = upload_context()
    await require_upload_auth(ctx, authorization)
    s3_upload_id = _decode_upload_id(upload_id)
    data = await read_body(request, ctx.policy.max_bytes)
    etag = await run_in_threadpool(ctx.uploads.put_part, _upload_key(key), s3_upload_id, part_number, data)
    return JSONResponse({"partNumber": part_number, "etag": etag}, headers={"ETag": etag})


@router.post(FILES_ROUTE + "/{key:path}/multipart/{upload_id}/complete", summary="Finish a multipart upload")
@replies_rejections
async def complete(
    request: Request, key: str, upload_id: str, body: CompleteBody, authorization: OptionalHeader = None
) -> Response:
    ctx = upload_context()
    await require_upload_auth(ctx, authorization)
    parts = [(part.part_number, part.etag) for part in body.parts]
    await run_in_threadpool(
        ctx.uploads.complete, _upload_key(key), _decode_upload_id(upload_id), parts, ctx.policy
    )
    return JSONResponse({"access_url": service_file_url(public_base_url(request), key)})


@router.get(FILES_ROUTE + "/{key:path}", summary="An uploaded file (a redirect to the stored object)")
@replies_rejections
async def get_file(key: str) -> Response:
    ctx = upload_context()
    if not is_upload_key(key) or not await run_in_threadpool(ctx.uploads.exists, key):
        raise UploadRejected(404, "no such file")
    return RedirectResponse(ctx.uploads.file_url(key), status_code=307)
