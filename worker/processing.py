"""One request, start to finish: claim, fetch, edit, store, complete. Never leaves a row stuck."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from contextlib import ExitStack
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from core import failures
from core.config import Settings, get_settings
from core.db import session_scope
from core.db_retry import retry_unavailable
from core.edit_params import EditParams
from core.failures import Failure
from core.input_errors import InputRejected
from core.request_store import claim, claim_waiting, complete_failed, complete_ok, give_up_expired, utcnow
from queueing.publish import unit_of_work
from storage.keys import output_key, random_name
from storage.s3 import get_store
from worker import engine_runtime
from worker.fetch import FetchLimits, fetch_input
from worker.image_probe import probe_image
from worker.liveportrait.engine import BatchItem, EditResult
from worker.liveportrait.errors import WeightsError
from worker.run_context import Cancelled, RunContext

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png"}


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
    rows = [row]
    if settings.batch_max_size > 1:
        rows += _claim_more(settings, settings.batch_max_size - 1)
    runnable = []
    for claimed in rows:
        early = _refuse_before_start(claimed.start_deadline, claimed.cancel_requested)
        if early is not None:
            _fail(claimed.id, early, claimed.attempts)
        else:
            runnable.append(claimed)
    if len(runnable) == 1:
        _run_one(runnable[0], settings)
    elif runnable:
        _run_batch(runnable, settings)


def _failure_for(exc: BaseException, row: Any) -> Failure:
    if isinstance(exc, InputRejected):
        return failures.invalid_input(exc.message, exc.error_type, value=row.input.get("image_url"))
    if isinstance(exc, WeightsError):
        return failures.weights_missing(str(exc) or "model weights not installed")
    if isinstance(exc, Cancelled):
        return failures.cancelled()
    if isinstance(exc, SoftTimeLimitExceeded):
        return failures.run_timeout()
    log.error("request %s failed", row.id, exc_info=exc)
    return failures.internal()


def _report_failure(row: Any, ctx: RunContext, exc: BaseException, started: float) -> None:
    failure = _failure_for(exc, row)
    ctx.log(f"failed: {failure.message}", "ERROR")
    metrics = {"inference_time": round(time.monotonic() - started, 4)}
    _fail(row.id, failure, row.attempts, metrics, logs=ctx.close())


def _record(
    row: Any, output: dict[str, Any], metrics: dict[str, Any], logs: list[dict[str, Any]], settings: Settings
) -> None:
    # The edit is done: keep trying to record it through a database restart rather than let the
    # lease expire and the whole edit run again.
    if not retry_unavailable(
        lambda: _complete(row.id, row.attempts, output, metrics, logs),
        for_s=settings.db_retry_s,
        what=f"the result of {row.id}",
    ):
        log.warning("request %s was taken over before it completed here", row.id)


def engine_seconds(result: EditResult, callback_s: float, encoded_before_s: float = 0.0) -> float:
    """The engine's own time for an edit: fal's `metrics.inference_time`.

    Everything Engine.edit did (decoding the input, detection, crop, the networks, paste-back),
    less the PNG/JPEG encoding of the output (delivery, like storing it) and less the time spent
    in this worker's log and cancellation callbacks (bookkeeping). A batched item's total is
    already its own share (Engine.edit_batch), so `encoded_before_s` stays 0 there.
    """
    total = float(result.timings.get("total", sum(result.timings.values())))
    encode = float(result.timings.get("encode", 0.0))
    return max(0.0, total - encode - encoded_before_s - callback_s)


def _run_one(row: Any, settings: Settings) -> None:
    started = time.monotonic()
    with RunContext(row.id, row.attempts, lease_s=settings.lease_s) as ctx:
        try:
            data, params = _fetch(row.input, ctx, settings)
            engine = engine_runtime.get(settings)
            callbacks_before = ctx.callback_s
            result = engine.edit(
                data, params, log=ctx.log, check=ctx.check, max_pixels=settings.max_input_pixels
            )
            engine_s = engine_seconds(result, ctx.callback_s - callbacks_before)
            ctx.check()
            output, metrics = _store(result, engine_s, ctx)
        except Exception as exc:
            _report_failure(row, ctx, exc, started)
            return
        _record(row, output, metrics, ctx.close(), settings)  # the last lines complete with it


def _run_batch(rows: list[Any], settings: Settings) -> None:
    """Several requests through the networks in one pass; each keeps its own lease, logs and
    outcome, so one bad input or one cancellation ends only its own request."""
    started = time.monotonic()
    with ExitStack() as stack:
        jobs = []
        for row in rows:
            ctx = stack.enter_context(RunContext(row.id, row.attempts, lease_s=settings.lease_s))
            try:
                jobs.append((row, ctx, *_fetch(row.input, ctx, settings)))
            except Exception as exc:
                _report_failure(row, ctx, exc, started)
        if not jobs:
            return
        for _, ctx, _, _ in jobs:
            ctx.log(f"running in a batch of {len(jobs)}")
        callbacks_before = [ctx.callback_s for _, ctx, _, _ in jobs]
        try:
            engine = engine_runtime.get(settings)
            items = [BatchItem(data, params, log=ctx.log, check=ctx.check) for _, ctx, data, params in jobs]
            outcomes: list[Any] = engine.edit_batch(items, max_pixels=settings.max_input_pixels)
        except Exception as exc:  # the shared pass itself failed (a time limit, out of memory)
            outcomes = [exc] * len(jobs)
        for (row, ctx, _, _), outcome, before in zip(jobs, outcomes, callbacks_before, strict=True):
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                engine_s = engine_seconds(outcome, ctx.callback_s - before)
                ctx.check()
                output, metrics = _store(outcome, engine_s, ctx)
            except Exception as exc:
                _report_failure(row, ctx, exc, started)
                continue
            _record(row, output, metrics, ctx.close(), settings)


def _claim_more(settings: Settings, limit: int) -> list[Any]:
    """Up to `limit` more waiting requests for this batch, waiting up to BATCH_WAIT_MS for them."""
    deadline = time.monotonic() + settings.batch_wait_ms / 1000
    found: list[Any] = []
    while True:
        try:
            with session_scope() as session:
                found += claim_waiting(
                    session,
                    worker=worker_name(),
                    lease_s=settings.lease_s,
                    max_attempts=settings.max_attempts,
                    limit=limit - len(found),
                )
        except Exception:  # the batch is an optimisation: the claimed request runs regardless
            log.exception("could not claim more requests for a batch")
            return found
        if len(found) >= limit or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


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
    with unit_of_work() as session:
        return give_up_expired(session, request_id, failure, max_attempts=settings.max_attempts)


def _complete(
    request_id: uuid.UUID,
    attempt: int,
    output: dict[str, Any],
    metrics: dict[str, Any],
    logs: list[dict[str, Any]],
) -> bool:
    with unit_of_work() as session:
        return complete_ok(session, request_id, attempt, output=output, metrics=metrics, logs=logs)


def _refuse_before_start(start_deadline: Any, cancel_requested: bool) -> Failure | None:
    if cancel_requested:
        return failures.cancelled()
    if start_deadline is not None and utcnow() > start_deadline:
        return failures.start_timeout()
    return None


def _fail(
    request_id: uuid.UUID,
    failure: Failure,
    attempt: int,
    metrics: dict[str, Any] | None = None,
    *,
    logs: list[dict[str, Any]] | None = None,
) -> None:
    def write() -> bool:
        with unit_of_work() as session:
            return complete_failed(session, request_id, failure, attempt=attempt, metrics=metrics, logs=logs)

    retry_unavailable(write, for_s=get_settings().db_retry_s, what=f"the failure of {request_id}")


def _fetch(payload: dict[str, Any], ctx: RunContext, settings: Settings) -> tuple[bytes, EditParams]:
    params = EditParams.model_validate({k: v for k, v in payload.items() if k != "image_url"})
    ctx.log("fetching the input image")
    data = fetch_input(str(payload["image_url"]), FetchLimits.from_settings(settings), get_store())
    fmt, width, height = probe_image(data, max_pixels=settings.max_input_pixels)
    ctx.log(f"input image: {fmt} {width}x{height}, {len(data)} bytes")
    ctx.check()
    return data, params


def _store(result: EditResult, engine_s: float, ctx: RunContext) -> tuple[dict[str, Any], dict[str, Any]]:
    store = get_store()
    extension = _EXTENSIONS.get(result.content_type, "bin")
    file_name = random_name(f".{extension}")
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
    # Per-stage seconds ride along in the row for /metrics' engine stage histograms; the status
    # endpoint shows clients only fal's `inference_time` (api/status_view.py).
    stages = {
        name: round(float(value), 4)
        for name, value in result.timings.items()
        if name not in ("total", "batch_size")
    }
    metrics = {"inference_time": round(engine_s, 4), "stages": stages}
    if "batch_size" in result.timings:
        metrics["batch_size"] = int(result.timings["batch_size"])
    return output, metrics
