"""Create the requests table.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("app_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("input", postgresql.JSONB(), nullable=False),
        sa.Column("webhook_url", sa.Text()),
        sa.Column("start_deadline", sa.DateTime(timezone=True)),
        sa.Column("queued_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("worker", sa.String(200)),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("logs", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("output", postgresql.JSONB()),
        sa.Column("metrics", postgresql.JSONB()),
        sa.Column("error", sa.Text()),
        sa.Column("error_type", sa.String(64)),
        sa.Column("error_status", sa.SmallInteger()),
        sa.Column("error_body", postgresql.JSONB()),
        sa.CheckConstraint(
            "status IN ('IN_QUEUE', 'IN_PROGRESS', 'COMPLETED')", name="requests_status_valid"
        ),
    )
    op.create_index(
        "requests_waiting_order",
        "requests",
        ["priority", "queued_at"],
        postgresql_where=sa.text("status = 'IN_QUEUE'"),
    )
    op.create_index(
        "requests_running_lease",
        "requests",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'IN_PROGRESS'"),
    )


def downgrade() -> None:
    op.drop_index("requests_running_lease", table_name="requests")
    op.drop_index("requests_waiting_order", table_name="requests")
    op.drop_table("requests")
