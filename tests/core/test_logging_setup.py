"""The log line formats: JSON objects (or text) that carry the bound request_id."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from core.config import Settings
from core.log_context import bound_request_id, current_request_id
from core.logging_setup import JsonFormatter, RequestIdFilter, TextFormatter, configure_logging


def _record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("portrait.test", logging.INFO, __file__, 1, message, args or ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    RequestIdFilter().filter(record)
    return record


def test_json_line_carries_the_bound_request_id_and_extras() -> None:
    with bound_request_id("0b5c6a9e-0000-4000-8000-000000000001"):
        line = JsonFormatter().format(_record(http_status=202))
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO" and entry["logger"] == "portrait.test"
    assert entry["request_id"] == "0b5c6a9e-0000-4000-8000-000000000001"
    assert entry["http_status"] == 202
    assert entry["ts"].endswith("+00:00")


def test_no_request_id_outside_a_request_and_binding_is_restored() -> None:
    assert "request_id" not in json.loads(JsonFormatter().format(_record()))
    with bound_request_id("outer"):
        with bound_request_id("inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == "outer"
    assert current_request_id() is None


def test_exceptions_are_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc_info"]


def test_text_format_appends_the_request_id() -> None:
    with bound_request_id("abc"):
        assert TextFormatter().format(_record()).endswith("hello world [request_id=abc]")


@pytest.mark.parametrize(("fmt", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging_installs_one_handler(fmt: str, formatter: type[logging.Formatter]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(Settings(log_format=fmt, log_level="WARNING"))
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, formatter)
        assert root.level == logging.WARNING
        assert (
            logging.getLogger("uvicorn.error").propagate and not logging.getLogger("uvicorn.error").handlers
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("uvicorn.access").disabled = False
