"""API keys, request owners (tenant isolation, per-key limits) and result retention.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.add_column("requests", sa.Column("owner_key_id", sa.String(64)))
    op.add_column("requests", sa.Column("retention_s", sa.Integer()))
    op.add_column("requests", sa.Column("expired_at", sa.DateTime(timezone=True)))
    op.create_index("requests_owner_recent", "requests", ["owner_key_id", "queued_at"])
    op.create_index(
        "requests_unexpired_finished",
        "requests",
        ["finished_at"],
        postgresql_where=sa.text("status = 'COMPLETED' AND expired_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("requests_unexpired_finished", table_name="requests")
    op.drop_index("requests_owner_recent", table_name="requests")
    op.drop_column("requests", "expired_at")
    op.drop_column("requests", "retention_s")
    op.drop_column("requests", "owner_key_id")
    op.drop_table("api_keys")
