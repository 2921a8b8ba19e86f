"""The one exception the command line reports, and one-line summaries of API error bodies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class CliError(Exception):
    """Printed as `error: <message>` with exit status 1; never a traceback."""


def summarise_detail(detail: Any) -> str:
    """fal's `detail`: a string, or a 422 list of {loc, msg} (from the API or from pydantic)."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail:
        return "; ".join(_item(item) for item in detail if isinstance(item, Mapping))
    return "invalid input"


def _item(item: Mapping[str, Any]) -> str:
    loc: Iterable[Any] = item.get("loc") or []
    # The API's locations start with "body"; pydantic's local ones do not.
    parts = [str(p) for p in loc if p != "body"]
    where = ".".join(parts) or "input"
    return f"{where}: {item.get('msg', 'invalid')}"
