"""`portrait-queue keys create|list|revoke`: API keys in the service's PostgreSQL.

Run on a machine with the server's settings (DATABASE_URL): it calls core.api_keys directly, the
same functions as `python -m api.keys`, rather than an HTTP admin API that would itself need
guarding.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.errors import CliError


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys (on a server machine: uses DATABASE_URL)")
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument("--json", action="store_true", help="print JSON on stdout")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser(
        "create", parents=[json_option], help="create a key; the secret is shown once"
    )
    create.add_argument("name")
    actions.add_parser("list", parents=[json_option], help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", parents=[json_option], help="revoke a key at once")
    revoke.add_argument("key_id")


def run(args: argparse.Namespace) -> int:
    try:
        from core import api_keys as keys
    except ImportError as exc:
        raise CliError(f"key management is not available in this installation ({exc})") from None
    try:
        return _run(args, keys)
    except CliError:
        raise
    except Exception as exc:
        # Almost always the database: name it, in one line.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CliError(f"cannot manage keys: {type(exc).__name__}: {reason} (check DATABASE_URL)") from None


def _run(args: argparse.Namespace, keys: Any) -> int:
    if args.keys_command == "create":
        key_id, secret = keys.create_key(args.name)
        if args.json:
            print(json.dumps({"key_id": key_id, "key": f"{key_id}:{secret}", "name": args.name}))
        else:
            print(f"{key_id}:{secret}")
        return 0
    if args.keys_command == "list":
        infos = keys.list_keys()
        if args.json:
            print(json.dumps([_info(i) for i in infos], default=str))
        for info in [] if args.json else infos:
            state = "active" if info.revoked_at is None else f"revoked {info.revoked_at:%Y-%m-%d %H:%M}"
            print(f"{info.key_id}  {info.created_at:%Y-%m-%d %H:%M}  {state:<24}  {info.name}")
        return 0
    if not keys.revoke_key(args.key_id):
        raise CliError(f"no active key {args.key_id}")
    print(json.dumps({"key_id": args.key_id, "revoked": True}) if args.json else f"revoked {args.key_id}")
    return 0


def _info(info: Any) -> dict[str, Any]:
    return {
        "key_id": info.key_id,
        "name": info.name,
        "created_at": info.created_at,
        "revoked_at": info.revoked_at,
    }
