"""Every setting of the service, read from environment variables (or a `.env` file).

One `Settings` object is shared by the API, the workers, the migrations and the local runner, so
that pointing any of them at external servers is a matter of environment variables only.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_APP_ID = "fal-ai/live-portrait/image"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- servers -------------------------------------------------------------------------
    database_url: str = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/portrait"
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint_url: str | None = None  # None: AWS itself
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "portrait-queue"
    # Where result and input URLs point: a CDN or public bucket URL ("https://cdn.example/") or,
    # when empty, presigned GET URLs valid for s3_presign_expires_s.
    s3_public_base_url: str = ""
    # Endpoint that presigned URLs name, when clients reach S3 under another address than the
    # service does (compose: the service uses http://minio:9000, clients http://localhost:9000).
    s3_presign_endpoint_url: str = ""
    s3_presign_expires_s: int = Field(7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    s3_create_bucket: bool = True

    # --- API -----------------------------------------------------------------------------
    host: str = "127.0.0.1"  # `make run` only; containers pass --host 0.0.0.0 to uvicorn
    port: int = 8000
    # Base of the status/response/cancel URLs handed to clients; empty: the request's own base.
    public_base_url: str = ""
    # Comma-separated endpoint ids served, each with fal's URL layout.
    app_ids: str = DEFAULT_APP_ID
    # `keys`: every call needs `Authorization: Key <key_id>:<secret>` (keys made with
    # `python -m api.keys create`, plus API_KEYS); `off`: no auth, one local user sees everything.
    auth_mode: Literal["keys", "off"] = "keys"
    # Comma-separated `key_id:key_secret` pairs accepted besides the keys in PostgreSQL (static
    # keys for deployments configured by environment only; the key id owns their requests).
    api_keys: str = ""
    # Per-key limits, counted in PostgreSQL so that they hold across API replicas; 0: no limit.
    key_max_in_flight: int = Field(50, ge=0)  # requests queued or running
    key_max_submits_per_minute: int = Field(300, ge=0)
    # Largest JSON body (413 beyond): a data-URI image of MAX_INPUT_BYTES is 4/3 of it as base64.
    max_json_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # A client that has not sent its whole body by then is answered 408 (slow-loris defence).
    body_read_timeout_s: float = Field(30.0, gt=0)
    # Results (output files and the result body) are deleted this long after the request ended
    # (fal keeps results one hour); `x-fal-object-lifecycle-preference` may ask for another
    # duration per request, up to RESULT_RETENTION_MAX_S.
    result_retention_s: int = Field(3600, ge=1)
    result_retention_max_s: int = Field(30 * 24 * 3600, ge=60)
    retention_sweep_interval_s: float = Field(60.0, ge=0)  # 0: no retention sweeps in the API
    # A finished request's row (status, error, logs) and its webhook deliveries are deleted this
    # long after it ended, and never before its result expired; then it answers 404.
    row_retention_s: int = Field(7 * 24 * 3600, ge=1)
    # Rows (results, rows) or objects (uploads) per sweep batch: one transaction, one DeleteObjects.
    sweep_batch_size: int = Field(1000, ge=1, le=1000)
    reconcile_interval_s: float = Field(15.0, ge=0)  # 0: no reconciler loop in the API process
    status_stream_poll_s: float = Field(0.2, gt=0)
    status_stream_keepalive_s: float = Field(5.0, gt=0)
    sync_run_timeout_s: float = Field(900.0, gt=0)
    # How long an Idempotency-Key answers with the request it created.
    idempotency_ttl_s: int = Field(24 * 3600, ge=1)
    # The API's own PostgreSQL connections (core/db_async.py), per API process: submit, status
    # and result each hold one for a single statement.
    api_db_pool_size: int = Field(16, ge=1)
    api_db_connect_timeout_s: float = Field(5.0, gt=0)
    api_db_acquire_timeout_s: float = Field(10.0, gt=0)
    api_db_command_timeout_s: float = Field(30.0, gt=0)
    # Queue positions are counted exactly up to this many requests ahead; beyond, they come from
    # an ordered read of the waiting rows shared by the API process for QUEUE_POSITION_REFRESH_S
    # (core/position_board.py), so that a long queue does not make every status poll expensive.
    queue_position_exact_up_to: int = Field(1000, ge=1)
    queue_position_refresh_s: float = Field(1.0, gt=0)

    # --- queue and workers ---------------------------------------------------------------
    queue_name: str = "portrait"
    worker_concurrency: int = Field(1, ge=1)
    task_soft_time_limit_s: int = Field(300, ge=1)
    task_time_limit_s: int = Field(330, ge=1)
    # A running request whose worker stopped renewing its lease this long is taken back.
    lease_s: int = Field(60, ge=5)
    max_attempts: int = Field(3, ge=1)
    # A queued request whose message was published this long ago is published again (duplicates
    # are harmless: the claim in PostgreSQL lets only one run).
    republish_after_s: int = Field(600, ge=1)
    worker_max_tasks_per_child: int = Field(200, ge=1)
    # How long a worker keeps retrying the write that finishes a request while PostgreSQL is
    # unreachable, so that a database restart does not throw finished work away.
    db_retry_s: float = Field(60.0, ge=0)
    # FAULT INJECTION ONLY (tests, `make chaos`): sleep this long at every stage boundary of an
    # edit, so that a request is reliably mid-run when a test kills, cancels or times it out.
    fault_stage_delay_s: float = Field(0.0, ge=0)

    # --- input limits --------------------------------------------------------------------
    max_input_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_input_pixels: int = Field(40_000_000, ge=1)
    fetch_timeout_s: float = Field(20.0, gt=0)
    fetch_max_redirects: int = Field(5, ge=0)
    # CIDRs that may be fetched although private/loopback/link-local (tests, private deployments).
    allowed_private_networks: str = ""

    # --- uploads (fal's storage API) and the client proxy -----------------------------------
    upload_max_bytes: int = Field(20 * 1024 * 1024, ge=1)
    # Comma-separated content types accepted for uploads; `type/*` matches a whole family.
    # application/octet-stream is in by default because clients send it for nameless blobs.
    upload_content_types: str = "image/*,application/octet-stream"
    # Uploads are deleted this long after they were written (a sweep, not an S3 lifecycle rule,
    # so that it works on every S3-compatible server).
    upload_retention_s: int = Field(7 * 24 * 3600, ge=60)
    upload_sweep_interval_s: float = Field(300.0, ge=0)  # 0: no sweep loop in the API process
    # Lifetime of upload URLs and of the CDN tokens handed to fal-client.
    upload_url_expires_s: int = Field(3600, ge=60)
    # HMAC key for upload URLs and CDN tokens; empty: derived from the S3 and database secrets,
    # which every API replica already shares.
    upload_signing_key: str = ""
    # Let /api/fal/proxy calls without Authorization act with the first of API_KEYS (fal's
    # server proxy `allowUnauthorizedRequests`: the proxy is then the only gate).
    proxy_allow_unauthenticated: bool = False

    # --- webhooks (fal_webhook) -----------------------------------------------------------
    # Seconds between attempts: 10 attempts over about 2 hours, doubling from 15 s (fal retries
    # "10 times in the span of 2 hours"). Each wait gets +-20 % jitter.
    webhook_retry_schedule: str = "15,30,60,120,240,480,960,1920,3840"
    webhook_timeout_s: float = Field(15.0, gt=0, le=300)  # per attempt (connect, send, answer)
    # Ed25519 private key (PEM, or base64 of the 32-byte seed); empty: one is generated once and
    # kept in PostgreSQL, shared by every process.
    webhook_signing_key: str = ""
    # How long a rotated-out key stays in /.well-known/jwks.json (receivers cache the JWKS).
    webhook_key_grace_s: int = Field(24 * 3600, ge=0)
    # X-Fal-Webhook-User-Id and the signed message's user id with AUTH_MODE=off; with keys it
    # is the submitting key's id.
    webhook_user_id: str = "portrait-queue"
    # Standard Webhooks secret (whsec_ + base64 of at least 24 bytes); set: every attempt also
    # carries webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256).
    webhook_standard_secret: str = ""

    # --- engine --------------------------------------------------------------------------
    weights_dir: Path = Path("./weights")
    # s3://bucket/prefix holding the same files; workers copy them into weights_dir first.
    weights_s3_uri: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    half_precision: bool = False
    torch_threads: int | None = None
    engine_arch: Literal["full", "tiny"] = "full"
    # Prepared portraits (crop, features, keypoints) kept per worker process, keyed by image
    # content and crop settings: repeated edits of one portrait skip that work. 0: off.
    prepared_cache_size: int = Field(8, ge=0)
    # torch.compile the warping module and decoder (a GPU option: slow first edits per shape).
    torch_compile: bool = False
    # A worker that claims a request also claims up to BATCH_MAX_SIZE - 1 more waiting ones
    # (waiting up to BATCH_WAIT_MS for them) and runs them through the networks as one batch:
    # one GPU then serves many concurrent users. 1: no batching (a CPU gains nothing from it).
    batch_max_size: int = Field(1, ge=1, le=64)
    batch_wait_ms: int = Field(0, ge=0, le=10_000)

    # --- operations: logs, metrics, playground ----------------------------------------------
    # `json`: one JSON object per line with the request_id of the request being handled (what
    # log shippers want); `text`: the classic human-readable line.
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # Prometheus exposition at /metrics (aggregated from PostgreSQL at scrape time).
    metrics_enabled: bool = True
    # Workers write a heartbeat to Redis this often (it expires after 3 periods): the worker
    # count in /metrics and the containers' health checks read it.
    worker_heartbeat_s: float = Field(10.0, gt=0)
    # The browser playground at / (static files that use the public API like any client).
    playground_enabled: bool = True

    # --- make run ------------------------------------------------------------------------
    local_data_dir: Path = Path("./var")  # where `make run` keeps PostgreSQL, Redis and S3 data

    @field_validator("allowed_private_networks")
    @classmethod
    def _valid_cidrs(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("webhook_standard_secret")
    @classmethod
    def _valid_standard_secret(cls, value: str) -> str:
        if value:
            standard_secret_bytes(value)
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        if any(float(item) < 0 for item in _split(value)):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE delays must be >= 0 seconds")
        return value

    @field_validator("torch_threads", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _hard_limit_after_soft(self) -> Settings:
        # The soft limit must fire first so that the request is failed cleanly, not killed.
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            raise ValueError("TASK_TIME_LIMIT_S must be greater than TASK_SOFT_TIME_LIMIT_S")
        return self

    @property
    def app_id_list(self) -> list[str]:
        return _split(self.app_ids) or [DEFAULT_APP_ID]

    @property
    def upload_content_type_list(self) -> list[str]:
        return [item.lower() for item in _split(self.upload_content_types)]

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(_split(self.api_keys))

    @property
    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in _split(self.allowed_private_networks)]

    @property
    def webhook_retry_delays(self) -> list[float]:
        return [float(item) for item in _split(self.webhook_retry_schedule)]

    @property
    def webhook_lease_s(self) -> float:
        # An attempt is DNS + connect + send + answer, each bounded by the timeout; past this a
        # dispatcher is presumed dead and the sweep hands the delivery to another one.
        return 3 * self.webhook_timeout_s + 10

    @property
    def visibility_timeout_s(self) -> int:
        # Must exceed the hard limit plus a reserved wait, or Redis redelivers running tasks.
        return self.task_time_limit_s * 3 + 60


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()


def standard_secret_bytes(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` and base64, as the specification
    writes it); ValueError when it is not one."""
    body = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("WEBHOOK_STANDARD_SECRET must be whsec_ followed by base64") from None
    if len(key) < 24:
        raise ValueError("WEBHOOK_STANDARD_SECRET must hold at least 24 bytes")
    return key
