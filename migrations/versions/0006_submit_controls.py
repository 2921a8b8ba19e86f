"""Submit controls: idempotency keys, X-Fal-No-Retry, X-Fal-Store-IO, user timeouts, queue length.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds these without rewriting a table of millions of rows.
    op.add_column("requests", sa.Column("no_retry", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("requests", sa.Column("store_io", sa.Boolean(), server_default="true", nullable=False))
    op.add_column("requests", sa.Column("timeout_type", sa.String(16)))
    # X-Fal-Store-IO: 0 clears both once the request ends.
    op.alter_column("requests", "input", nullable=True)
    op.alter_column("requests", "logs", nullable=True)
    op.add_column("webhook_deliveries", sa.Column("timeout_type", sa.String(16)))
    # (app_id, id): the count reads it in id order, which no other plan gives for free, so the
    # planner never trades it for a scan that meets the endpoint's rows late.
    op.create_index(
        "requests_waiting_app",
        "requests",
        ["app_id", "id"],
        postgresql_where=sa.text("status = 'IN_QUEUE'"),
    )
    # X-Fal-Store-IO: 0 rows that ended with their input still there (the backstop's batch);
    # a row leaves it as soon as its input is dropped, so it stays a few entries long.
    op.create_index(
        "requests_input_unforgotten",
        "requests",
        ["id"],
        postgresql_where=sa.text("status = 'COMPLETED' AND NOT store_io AND input IS NOT NULL"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", postgresql.BYTEA(), nullable=False),
        sa.Column(
            "request_id",
            sa.Uuid(),
            sa.ForeignKey("requests.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key", name="idempotency_keys_pkey"),
    )
    op.create_index("idempotency_keys_expiry", "idempotency_keys", ["expires_at"])
    op.create_index("idempotency_keys_request", "idempotency_keys", ["request_id"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_index("requests_waiting_app", table_name="requests")
    op.drop_index("requests_input_unforgotten", table_name="requests")
    op.drop_column("webhook_deliveries", "timeout_type")
    op.execute("UPDATE requests SET logs = '[]'::jsonb WHERE logs IS NULL")
    op.execute("UPDATE requests SET input = '{}'::jsonb WHERE input IS NULL")
    op.alter_column("requests", "logs", nullable=False)
    op.alter_column("requests", "input", nullable=False)
    op.drop_column("requests", "timeout_type")
    op.drop_column("requests", "store_io")
    op.drop_column("requests", "no_retry")
