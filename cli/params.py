"""Edit options generated from `EditParams`, so the command line always matches the API schema:
`--smile 1 --blink -10 --rotate-yaw 5 --no-pasteback --output-format png`."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from cli.errors import CliError, summarise_detail
from core.edit_params import EditParams

_FLAG_PREFIX = "flag_"


def _range_text(prop: dict[str, Any]) -> str:
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum")
    if low is None or high is None:
        return ""
    opening = "(" if "exclusiveMinimum" in prop else "["
    return f" {opening}{low:g}, {high:g}]"


def add_edit_options(parser: argparse.ArgumentParser) -> None:
    properties = EditParams.model_json_schema()["properties"]
    group = parser.add_argument_group("edit controls (server defaults when omitted)")
    for name in EditParams.model_fields:
        prop = properties[name]
        names = ["--" + name.replace("_", "-")]
        if name.startswith(_FLAG_PREFIX):
            # --flag-pasteback and the shorter --pasteback both work (and their --no- forms).
            names.append("--" + name.removeprefix(_FLAG_PREFIX).replace("_", "-"))
        help_text = f"{prop.get('description', '')} default {prop.get('default')!r}"
        if prop.get("type") == "boolean":
            group.add_argument(
                *names, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif "enum" in prop:
            group.add_argument(*names, dest=name, choices=prop["enum"], default=None, help=help_text)
        else:
            kind = int if prop.get("type") == "integer" else float
            group.add_argument(
                *names,
                dest=name,
                type=kind,
                default=None,
                metavar="N" if kind is int else "X",
                help=f"{help_text}; range{_range_text(prop)}",
            )


def edit_values(args: argparse.Namespace) -> dict[str, Any]:
    """The controls given on the command line, checked against the schema before any upload."""
    given = {name: getattr(args, name) for name in EditParams.model_fields if getattr(args, name) is not None}
    try:
        EditParams.model_validate(given)
    except ValidationError as exc:
        raise CliError(f"invalid option: {summarise_detail(exc.errors())}") from None
    return given
