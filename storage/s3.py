"""The object store: boto3 against any S3-compatible server (AWS, MinIO, moto, Ceph …)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.client import Config as BotoConfig
from botocore.exceptions import ClientError

from core.config import Settings, get_settings
from storage.file_urls import key_from_service_path

# Bodies up to this size are sent without `Expect: 100-continue`. botocore asks for it on every
# upload, which costs a round trip before the body; it only spares sending a large body that the
# server would refuse, and these bodies are already in memory (results, small uploads).
NO_CONTINUE_MAX_BYTES = 16 * 1024 * 1024


_BUCKET_EXISTS = {"BucketAlreadyExists", "BucketAlreadyOwnedByYou"}
# DeleteObjects' limit of keys per call.
DELETE_BATCH = 1000
# DeleteObjects calls one delete_keys keeps in flight at once.
_DELETE_CALLS = 8


class ObjectTooLarge(Exception):
    pass


class DeleteFailed(RuntimeError):
    pass


def _skip_continue(request: Any, **_: Any) -> None:
    """botocore `before-send` hook for PutObject (the header is not signed, so dropping it is safe)."""
    length = request.headers.get("Content-Length")
    if length is not None and int(length) <= NO_CONTINUE_MAX_BYTES:
        request.headers.pop("Expect", None)


class ObjectStore:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self._public_base = settings.s3_public_base_url.rstrip("/")
        self._presign_expires = settings.s3_presign_expires_s
        self._endpoint = (settings.s3_endpoint_url or "").rstrip("/")
        self._create_bucket = settings.s3_create_bucket
        self._presign_endpoint = settings.s3_presign_endpoint_url.rstrip("/")
        self._client: Any = _client(settings, settings.s3_endpoint_url or None)
        self._client.meta.events.register("before-send.s3.PutObject", _skip_continue)
        self._signer: Any = (
            _client(settings, self._presign_endpoint) if self._presign_endpoint else self._client
        )
        self._bucket_checked = False

    def ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in {"404", "NoSuchBucket", "NotFound"} or not self._create_bucket:
                raise
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except ClientError as race:
                # Another process (or thread) created it between our check and our create.
                if str(race.response.get("Error", {}).get("Code", "")) not in _BUCKET_EXISTS:
                    raise
        self._bucket_checked = True

    @property
    def client(self) -> Any:
        """The boto3 client, for operations this class does not wrap (multipart, listing)."""
        return self._client

    def ping(self) -> None:
        self._client.head_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.ensure_bucket()
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str, *, max_bytes: int) -> tuple[bytes, str | None]:
        head = self._client.head_object(Bucket=self.bucket, Key=key)
        if int(head.get("ContentLength", 0)) > max_bytes:
            raise ObjectTooLarge(f"{head['ContentLength']} bytes")
        obj = self._client.get_object(Bucket=self.bucket, Key=key)
        return obj["Body"].read(max_bytes + 1), obj.get("ContentType")

    def list_pages(self, prefix: str) -> Iterator[list[dict[str, Any]]]:
        """The objects under `prefix`, a listing page (up to DELETE_BATCH objects) at a time.

        ListObjects (version 1, paged by the last key) rather than ListObjectsV2: the local S3
        server (s3rver) answers V2 with an internal error once a prefix holds more than a page.
        """
        for page in self._client.get_paginator("list_objects").paginate(Bucket=self.bucket, Prefix=prefix):
            yield list(page.get("Contents", []))

    def keys_under(self, prefix: str) -> Iterator[str]:
        for page in self.list_pages(prefix):
            yield from (obj["Key"] for obj in page)

    def delete_keys(self, keys: Iterable[str]) -> int:
        """Delete these keys, DELETE_BATCH per call; raises DeleteFailed if S3 refused any (a
        missing key is no refusal)."""
        unique = sorted(set(keys))
        if not unique:
            return 0
        # Several calls in flight: a server that deletes object by object (s3rver: files and
        # folders on disk) then works on several at once, and any server answers sooner.
        size = max(1, min(DELETE_BATCH, -(-len(unique) // _DELETE_CALLS)))
        chunks = [unique[start : start + size] for start in range(0, len(unique), size)]
        with ThreadPoolExecutor(max_workers=min(_DELETE_CALLS, len(chunks))) as pool:
            refused = [e for errors in pool.map(self._delete_chunk, chunks) for e in errors]
        if refused:
            raise DeleteFailed(f"S3 refused to delete {len(refused)} objects, e.g. {refused[0]}")
        return len(unique)

    def _delete_chunk(self, chunk: list[str]) -> list[dict[str, Any]]:
        answer = self._client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )
        return [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]

    def url_for(self, key: str) -> str:
        if self._public_base:
            return f"{self._public_base}/{key}"
        return str(
            self._signer.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=self._presign_expires,
            )
        )

    def presigned_put(self, key: str, content_type: str) -> str:
        return str(
            self._signer.generate_presigned_url(
                "put_object",
                Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
                ExpiresIn=self._presign_expires,
            )
        )

    def key_from_url(self, url: str) -> str | None:
        """The key of one of our own objects referenced by `url`, else None.

        Our own objects are read through the S3 API, not over HTTP, so that an internal S3 server
        (often on a private address) serves them without opening the SSRF guard.
        """
        base = url.split("?", 1)[0]
        if self._public_base and base.startswith(self._public_base + "/"):
            return unquote(base[len(self._public_base) + 1 :]) or None
        target = urlsplit(base)
        # Presigned URLs may name the presign endpoint rather than the one the service uses.
        for configured in (self._endpoint, self._presign_endpoint):
            if not configured:
                continue
            endpoint = urlsplit(configured)
            prefix = f"{endpoint.path.rstrip('/')}/{self.bucket}/"
            if (target.scheme, target.netloc) == (
                endpoint.scheme,
                endpoint.netloc,
            ) and target.path.startswith(prefix):
                return unquote(target.path[len(prefix) :]) or None
        if target.scheme in {"http", "https"}:
            return key_from_service_path(unquote(target.path))
        return None


def s3_client(settings: Settings) -> Any:
    """A boto3 client for the configured endpoint, for callers outside the result bucket."""
    return _client(settings, settings.s3_endpoint_url or None)


def _client(settings: Settings, endpoint_url: str | None) -> Any:
    # Path-style addressing works with every S3-compatible server and with bare IP endpoints.
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=settings.s3_access_key or None,
        aws_secret_access_key=settings.s3_secret_key or None,
        region_name=settings.s3_region,
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


@lru_cache
def get_store() -> ObjectStore:
    return ObjectStore(get_settings())
