"""One request, start to finish: claim, fetch, edit, store, complete. Never leaves a row stuck."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import string
import time
import uuid
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from core import failures
from core.config import Settings, get_settings
from core.db import session_scope
from core.db_retry import retry_unavailable
from core.failures import Failure
from core.request_store import claim, complete_failed, complete_ok, give_up_expired, utcnow
from storage.keys import output_key
from storage.s3 import get_store
from worker import engine_runtime
from worker.fetch import FetchLimits, fetch_input
from worker.image_probe import probe_image
from worker.input_errors import InputRejected
from worker.liveportrait.errors import EngineError, WeightsError
from worker.liveportrait.params import EditParams
from worker.run_context import Cancelled, RunContext

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png"}
_NAME_ALPHABET = string.ascii_letters + string.digits


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_request(request_id: uuid.UUID, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    row = retry_unavailable(
        lambda: _claim(request_id, settings), for_s=settings.db_retry_s, what=f"the claim of {request_id}"
    )
    if row is None:
        # Finished, cancelled, or running elsewhere: a duplicate or redelivered message. Or its
        # runs are used up and its last worker died: fail it here too, so that it never waits
        # on a reconciler.
        retry_unavailable(
            lambda: _give_up(request_id, settings), for_s=settings.db_retry_s, what=f"the end of {request_id}"
        )
        log.info("request %s is not claimable; skipping", request_id)
        return
    attempt = row.attempts
    early = _refuse_before_start(row.start_deadline, row.cancel_requested)
    if early is not None:
        _fail(request_id, early, attempt)
        return

    started = time.monotonic()
    with RunContext(request_id, attempt, lease_s=settings.lease_s) as ctx:
        failure: Failure | None = None
        try:
            output, metrics = _edit(row.input, ctx, settings)
        except InputRejected as exc:
            failure = failures.invalid_input(exc.message, exc.error_type, value=row.input.get("image_url"))
        except WeightsError as exc:
            failure = failures.weights_missing(str(exc) or "model weights not installed")
        except EngineError as exc:
            failure = failures.invalid_input(str(exc), exc.error_type, value=row.input.get("image_url"))
        except Cancelled:
            failure = failures.cancelled()
        except SoftTimeLimitExceeded:
            failure = failures.run_timeout()
        except Exception:
            log.exception("request %s failed", request_id)
            failure = failures.internal()
        if failure is not None:
            ctx.log(f"failed: {failure.message}", "ERROR")
            _fail(request_id, failure, attempt, {"inference_time": round(time.monotonic() - started, 4)})
            return
        # The edit is done: keep trying to record it through a database restart rather than
        # let the lease expire and the whole edit run again.
        if not retry_unavailable(
            lambda: _complete(request_id, attempt, output, metrics),
            for_s=settings.db_retry_s,
            what=f"the result of {request_id}",
        ):
            log.warning("request %s was taken over before it completed here", request_id)


def _claim(request_id: uuid.UUID, settings: Settings) -> Any:
    with session_scope() as session:
        return claim(
            session,
            request_id,
            worker=worker_name(),
            lease_s=settings.lease_s,
            max_attempts=settings.max_attempts,
        )


def _give_up(request_id: uuid.UUID, settings: Settings) -> bool:
    failure = failures.runner_lost(settings.max_attempts)
    with session_scope() as session:
        return give_up_expired(session, request_id, failure, max_attempts=settings.max_attempts)


def _complete(request_id: uuid.UUID, attempt: int, output: dict[str, Any], metrics: dict[str, Any]) -> bool:
    with session_scope() as session:
        return complete_ok(session, request_id, attempt, output=output, metrics=metrics)


def _refuse_before_start(start_deadline: Any, cancel_requested: bool) -> Failure | None:
    if cancel_requested:
        return failures.cancelled()
    if start_deadline is not None and utcnow() > start_deadline:
        return failures.start_timeout()
    return None


def _fail(
    request_id: uuid.UUID, failure: Failure, attempt: int, metrics: dict[str, Any] | None = None
) -> None:
    def write() -> bool:
        with session_scope() as session:
            return complete_failed(session, request_id, failure, attempt=attempt, metrics=metrics)

    retry_unavailable(write, for_s=get_settings().db_retry_s, what=f"the failure of {request_id}")


def _edit(
    payload: dict[str, Any], ctx: RunContext, settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    engine = engine_runtime.get(settings)
    params = EditParams.model_validate({k: v for k, v in payload.items() if k != "image_url"})
    image_url = str(payload["image_url"])
    store = get_store()

    ctx.log("fetching the input image")
    data = fetch_input(image_url, FetchLimits.from_settings(settings), store)
    fmt, width, height = probe_image(data, max_pixels=settings.max_input_pixels)
    ctx.log(f"input image: {fmt} {width}x{height}, {len(data)} bytes")
    ctx.check()

    result = engine.edit(data, params, log=ctx.log, check=ctx.check, max_pixels=settings.max_input_pixels)
    ctx.check()

    extension = _EXTENSIONS.get(result.content_type, "bin")
    file_name = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(12)) + f".{extension}"
    key = output_key(ctx.request_id, file_name)
    store.put(key, result.data, result.content_type)
    ctx.log(f"output stored: {result.width}x{result.height} {result.content_type}")

    output = {
        "image": {
            "url": store.url_for(key),
            "content_type": result.content_type,
            "file_name": file_name,
            "file_size": len(result.data),
            "width": result.width,
            "height": result.height,
        }
    }
    total = result.timings.get("total", sum(result.timings.values()))
    # Per-stage seconds ride along in the row for /metrics' engine stage histograms; the status
    # endpoint shows clients only fal's `inference_time` (api/status_view.py).
    stages = {name: round(float(value), 4) for name, value in result.timings.items() if name != "total"}
    metrics = {"inference_time": round(float(total), 4), "stages": stages}
    return output, metrics
