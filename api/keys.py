"""`python -m api.keys`: create, list and revoke API keys (core/api_keys.py holds the table).

python -m api.keys create NAME     # prints key_id:secret as its last line
python -m api.keys list
python -m api.keys revoke KEY_ID
"""

from __future__ import annotations

import argparse
import sys

from core.api_keys import create_key, list_keys, revoke_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.keys", description="Manage API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key; prints key_id:secret last")
    create.add_argument("name")
    commands.add_parser("list", help="list keys (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)
    if args.command == "create":
        key_id, secret = create_key(args.name)
        print(f"created key {key_id} ({args.name}); the secret is shown only now:")
        print(f"{key_id}:{secret}")
        return 0
    if args.command == "list":
        for info in list_keys():
            state = "active" if info.active else f"revoked {info.revoked_at:%Y-%m-%d %H:%M:%S}"
            print(f"{info.key_id}  {info.created_at:%Y-%m-%d %H:%M:%S}  {state:<27}  {info.name}")
        return 0
    if revoke_key(args.key_id):
        print(f"revoked {args.key_id}")
        return 0
    print(f"no active key {args.key_id}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
