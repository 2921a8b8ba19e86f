"""Bounded history: when each result expires, and indexes that read only unfinished or recent rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# What RESULT_RETENTION_S defaulted to when these rows finished; rows with their own lifecycle
# preference keep it.
_DEFAULT_RETENTION_S = 3600


def upgrade() -> None:
    op.add_column("requests", sa.Column("result_expires_at", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE requests SET result_expires_at = finished_at"
        f" + make_interval(secs => COALESCE(retention_s, {_DEFAULT_RETENTION_S}))"
        " WHERE status = 'COMPLETED' AND expired_at IS NULL"
    )
    op.drop_index("requests_unexpired_finished", table_name="requests")
    op.create_index(
        "requests_result_due",
        "requests",
        ["result_expires_at"],
        postgresql_where=sa.text("status = 'COMPLETED' AND expired_at IS NULL"),
    )
    op.create_index(
        "requests_row_due",
        "requests",
        ["finished_at"],
        postgresql_where=sa.text("status = 'COMPLETED' AND expired_at IS NOT NULL"),
    )
    op.create_index(
        "requests_unfinished_owner",
        "requests",
        ["owner_key_id"],
        postgresql_where=sa.text("status <> 'COMPLETED'"),
    )


def downgrade() -> None:
    op.drop_index("requests_unfinished_owner", table_name="requests")
    op.drop_index("requests_row_due", table_name="requests")
    op.drop_index("requests_result_due", table_name="requests")
    op.create_index(
        "requests_unexpired_finished",
        "requests",
        ["finished_at"],
        postgresql_where=sa.text("status = 'COMPLETED' AND expired_at IS NULL"),
    )
    op.drop_column("requests", "result_expires_at")
