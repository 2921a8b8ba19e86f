"""API keys in PostgreSQL: create, list, revoke, verify; and the `python -m api.keys` command.

A key is `<key_id>:<secret>`, fal's FAL_KEY shape. Only SHA-256 of the secret is stored; the
secret is shown once, when the key is created.

    python -m api.keys create NAME     # prints key_id:secret as its last line
    python -m api.keys list
    python -m api.keys revoke KEY_ID
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from core.clock import utcnow
from core.db import session_scope
from core.db_async import connection
from core.key_models import ApiKey

_SECRET_BYTES = 32  # 256 bits: guessing is hopeless, so a fast hash is enough


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(name: str) -> tuple[str, str]:
    """A new key; returns (key_id, secret). Join them with ':' for the Authorization header."""
    key_id = str(uuid.uuid4())
    secret = secrets.token_hex(_SECRET_BYTES)
    with session_scope() as session:
        session.add(ApiKey(key_id=key_id, name=name, secret_sha256=_digest(secret), created_at=utcnow()))
    return key_id, secret


def list_keys() -> list[KeyInfo]:
    with session_scope() as session:
        rows = session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars().all()
        return [KeyInfo(r.key_id, r.name, r.created_at, r.revoked_at) for r in rows]


def revoke_key(key_id: str) -> bool:
    """Revoke a key at once (every later call with it is 401); False if unknown or already revoked."""
    with session_scope() as session:
        done = session.execute(
            update(ApiKey)
            .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(ApiKey.key_id)
        ).scalar_one_or_none()
    return done is not None


async def verify_key(key_id: str, secret: str) -> bool:
    """Whether key_id names an active key whose secret this is (constant-time comparison)."""
    # Looked up on every call, without a cache: a revoked key is refused at once.
    async with connection() as conn:
        stored = await conn.fetchval(
            "SELECT secret_sha256 FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
        )
    # Compare even for an unknown id, so that timing does not tell which ids exist.
    return hmac.compare_digest(_digest(secret), stored or b"\0" * 32) and stored is not None


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
