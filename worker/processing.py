"""Claimed requests, start to finish: claim, fetch, edit, store, complete. Never leaves a row stuck.

One flow runs them: the request a message names, plus up to BATCH_MAX_SIZE - 1 waiting ones
claimed with it, go through Engine.edit_batch together (a single request is a batch of one),
and each keeps its own lease, logs and outcome.

A request submitted with X-Fal-Store-IO: 0 loses its input right after the commit that ends it
here (storage.inputs.forget_input); one submitted with X-Fal-No-Retry is never run twice: a
redelivered message for it fails it once its lease ran out, and the worker's parent process
fails it at once when the process running it dies (`fail_lost_no_retry`, worker/tasks.py).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Row

from core import failures
from core.clock import utcnow
from core.config import Settings, get_settings
from core.db import session_scope
from core.db_retry import retry_unavailable
from core.edit_params import EditParams
from core.failures import Failure
from core.input_errors import InputRejected
from core.requests_table import (
    claim,
    claim_waiting,
    complete_failed,
    complete_ok,
    fail_no_retry_expired,
    fail_no_retry_of_worker,
    give_up_expired,
)
from queueing.publish import unit_of_work
from storage.inputs import forget_input
from storage.layout import output_key, random_name
from storage.s3 import get_store
from worker import engine_runtime
from worker.fetch import FetchLimits, fetch_input
from worker.image_probe import probe_image
from worker.liveportrait.engine import BatchItem, EditResult
from worker.liveportrait.errors import WeightsError
from worker.run_context import Cancelled, RunContext

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png"}


def worker_name(pid: int | None = None) -> str:
    """The `worker` column of the rows a process claims: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


@dataclass(frozen=True)
class ClaimedRequest:
    """The columns of a claimed row that running it needs; `attempts` is the claim's fence."""

    id: uuid.UUID
    attempts: int
    input: dict[str, Any]
    start_deadline: datetime | None
    cancel_requested: bool
    store_io: bool = True

    @classmethod
    def from_row(cls, row: Row[Any]) -> ClaimedRequest:
        return cls(
            row.id,
            row.attempts,
            dict(row.input or {}),
            row.start_deadline,
            bool(row.cancel_requested),
            bool(row.store_io),
        )


@dataclass
class Job:
    """A claimed request whose input is fetched and checked, on its way through the engine."""

    request: ClaimedRequest
    ctx: RunContext
    image: bytes
    params: EditParams
    # ctx.callback_s when the edit starts: the callbacks' share of the edit is what comes after.
    callbacks_before: float = 0.0


def run_request(request_id: uuid.UUID, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    first = retry_unavailable(
        lambda: _claim(request_id, settings), for_s=settings.db_retry_s, what=f"the claim of {request_id}"
    )
    if first is None:
        # Finished, cancelled, or running elsewhere: a duplicate or redelivered message. Or its
        # runs are used up and its last worker died: fail it here too, so that it never waits
        # on a reconciler.
        retry_unavailable(
            lambda: _give_up(request_id, settings), for_s=settings.db_retry_s, what=f"the end of {request_id}"
        )
        log.info("request %s is not claimable; skipping", request_id)
        return
    claimed = [first]
    if settings.batch_max_size > 1:
        claimed += _claim_more(settings, settings.batch_max_size - 1)
    runnable = []
    for request in claimed:
        early = _refuse_before_start(request)
        if early is not None:
            _fail(request, early)
        else:
            runnable.append(request)
    if runnable:
        _run(runnable, settings)


def _failure_for(exc: BaseException, request: ClaimedRequest) -> Failure:
    if isinstance(exc, InputRejected):
        return failures.invalid_input(exc.message, exc.error_type, value=request.input.get("image_url"))
    if isinstance(exc, WeightsError):
        return failures.weights_missing(str(exc) or "model weights not installed")
    if isinstance(exc, Cancelled):
        return failures.cancelled()
    if isinstance(exc, SoftTimeLimitExceeded):
        return failures.run_timeout()
    log.error("request %s failed", request.id, exc_info=exc)
    return failures.internal()


def _report_failure(request: ClaimedRequest, ctx: RunContext, exc: BaseException, started: float) -> None:
    failure = _failure_for(exc, request)
    ctx.log(f"failed: {failure.message}", "ERROR")
    metrics = {"inference_time": round(time.monotonic() - started, 4)}
    _fail(request, failure, metrics, logs=ctx.close())


def _record(
    request: ClaimedRequest,
    output: dict[str, Any],
    metrics: dict[str, Any],
    logs: list[dict[str, Any]],
    settings: Settings,
) -> None:
    # The edit is done: keep trying to record it through a database restart rather than let the
    # lease expire and the whole edit run again.
    if not retry_unavailable(
        lambda: _complete(request.id, request.attempts, output, metrics, logs),
        for_s=settings.db_retry_s,
        what=f"the result of {request.id}",
    ):
        log.warning("request %s was taken over before it completed here", request.id)
        return
    _forget(request)


def _forget(request: ClaimedRequest) -> None:
    """After the commit that ended `request` here: an X-Fal-Store-IO: 0 request's input goes
    now. On any error the reconciler's backstop does it in a round or two."""
    if request.store_io:
        return
    try:
        forget_input(get_store(), request.id, request.input.get("image_url"))
    except Exception:
        log.warning("could not drop the input of %s; the reconciler will", request.id, exc_info=True)


def engine_seconds(result: EditResult, callback_s: float, encoded_before_s: float = 0.0) -> float:
    """The engine's own time for an edit: fal's `metrics.inference_time`.

    Everything the engine did for this item (decoding the input, detection, crop, the networks,
    paste-back), less the PNG/JPEG encoding of the output (delivery, like storing it) and less
    the time spent in this worker's log and cancellation callbacks (bookkeeping). An item's
    total from Engine.edit_batch is already its own share of a batch, and for a batch of one it
    is the whole edit, as Engine.edit counts it; `encoded_before_s` is 0 for both.
    """
    total = float(result.timings.get("total", sum(result.timings.values())))
    encode = float(result.timings.get("encode", 0.0))
    return max(0.0, total - encode - encoded_before_s - callback_s)


def _run(requests: list[ClaimedRequest], settings: Settings) -> None:
    """The requests through the engine in one pass of its networks; each keeps its own lease,
    logs and outcome, so one bad input or one cancellation ends only its own request."""
    started = time.monotonic()
    # Batched: more than one request was claimed to run together. Only then do the logs and the
    # metrics name the batch, even if fetches leave only one of them to edit.
    batched = len(requests) > 1
    with ExitStack() as stack:
        jobs: list[Job] = []
        for request in requests:
            ctx = stack.enter_context(RunContext(request.id, request.attempts, lease_s=settings.lease_s))
            try:
                image, params = _fetch(request.input, ctx, settings)
            except Exception as exc:
                _report_failure(request, ctx, exc, started)
                continue
            jobs.append(Job(request, ctx, image, params))
        if not jobs:
            return
        if batched:
            for job in jobs:
                job.ctx.log(f"running in a batch of {len(jobs)}")
        for job in jobs:
            job.callbacks_before = job.ctx.callback_s
        outcomes = _edit(jobs, settings)
        for job, outcome in zip(jobs, outcomes, strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                engine_s = engine_seconds(outcome, job.ctx.callback_s - job.callbacks_before)
                job.ctx.check()
                output, metrics = _store(outcome, engine_s, job.ctx, batched=batched)
            except Exception as exc:
                _report_failure(job.request, job.ctx, exc, started)
                continue
            # The last log lines are written by the statement that completes the request.
            _record(job.request, output, metrics, job.ctx.close(), settings)


def _edit(jobs: list[Job], settings: Settings) -> list[EditResult | Exception]:
    """Each job's result or its own failure, in order."""
    try:
        engine = engine_runtime.get(settings)
        items = [BatchItem(job.image, job.params, log=job.ctx.log, check=job.ctx.check) for job in jobs]
        return engine.edit_batch(items, max_pixels=settings.max_input_pixels)
    except Exception as exc:  # no engine, or the shared pass itself failed (a time limit, out of memory)
        return [exc] * len(jobs)


def _claim_more(settings: Settings, limit: int) -> list[ClaimedRequest]:
    """Up to `limit` more waiting requests for this batch, waiting up to BATCH_WAIT_MS for them."""
    deadline = time.monotonic() + settings.batch_wait_ms / 1000
    found: list[ClaimedRequest] = []
    while True:
        try:
            with session_scope() as session:
                rows = claim_waiting(
                    session,
                    worker=worker_name(),
                    lease_s=settings.lease_s,
                    max_attempts=settings.max_attempts,
                    limit=limit - len(found),
                )
            found += [ClaimedRequest.from_row(row) for row in rows]
        except Exception:  # the batch is an optimisation: the claimed request runs regardless
            log.exception("could not claim more requests for a batch")
            return found
        if len(found) >= limit or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def _claim(request_id: uuid.UUID, settings: Settings) -> ClaimedRequest | None:
    with session_scope() as session:
        row = claim(
            session,
            request_id,
            worker=worker_name(),
            lease_s=settings.lease_s,
            max_attempts=settings.max_attempts,
        )
    return ClaimedRequest.from_row(row) if row is not None else None


def _give_up(request_id: uuid.UUID, settings: Settings) -> bool:
    failure = failures.runner_lost(settings.max_attempts)
    with unit_of_work() as session:
        return fail_no_retry_expired(session, request_id, failures.runner_disconnected()) or give_up_expired(
            session, request_id, failure, max_attempts=settings.max_attempts
        )


def fail_lost_no_retry(pid: int) -> list[uuid.UUID]:
    """The process `pid` of this host died while it ran requests: fail those submitted with
    X-Fal-No-Retry now, rather than once their leases run out (the others run again then).
    Called by that process's Celery parent, the first to know."""
    with unit_of_work() as session:
        return fail_no_retry_of_worker(session, worker_name(pid), failures.runner_disconnected())


def _complete(
    request_id: uuid.UUID,
    attempt: int,
    output: dict[str, Any],
    metrics: dict[str, Any],
    logs: list[dict[str, Any]],
) -> bool:
    with unit_of_work() as session:
        return complete_ok(session, request_id, attempt, output=output, metrics=metrics, logs=logs)


def _refuse_before_start(request: ClaimedRequest) -> Failure | None:
    if request.cancel_requested:
        return failures.cancelled()
    if request.start_deadline is not None and utcnow() > request.start_deadline:
        return failures.start_timeout()
    return None


def _fail(
    request: ClaimedRequest,
    failure: Failure,
    metrics: dict[str, Any] | None = None,
    *,
    logs: list[dict[str, Any]] | None = None,
) -> None:
    def write() -> bool:
        with unit_of_work() as session:
            return complete_failed(
                session, request.id, failure, attempt=request.attempts, metrics=metrics, logs=logs
            )

    if retry_unavailable(write, for_s=get_settings().db_retry_s, what=f"the failure of {request.id}"):
        _forget(request)


def _fetch(payload: dict[str, Any], ctx: RunContext, settings: Settings) -> tuple[bytes, EditParams]:
    params = EditParams.model_validate({k: v for k, v in payload.items() if k != "image_url"})
    ctx.log("fetching the input image")
    data = fetch_input(str(payload["image_url"]), FetchLimits.from_settings(settings), get_store())
    fmt, width, height = probe_image(data, max_pixels=settings.max_input_pixels)
    ctx.log(f"input image: {fmt} {width}x{height}, {len(data)} bytes")
    ctx.check()
    return data, params


def _store(
    result: EditResult, engine_s: float, ctx: RunContext, *, batched: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
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
    if batched and "batch_size" in result.timings:
        metrics["batch_size"] = int(result.timings["batch_size"])
    return output, metrics
