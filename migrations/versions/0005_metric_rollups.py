"""Metric rollups: counters and histograms kept as work finishes, backfilled from the rows.

A scrape then reads neither the history nor the finished rows (core/metric_rollups.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# The bucket bounds in force at this revision (core/metric_rollups.py), copied so that this
# migration keeps meaning the same whatever the code does later.
_WAIT = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_RUN = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
_STAGE = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _le(value: str, bounds: tuple[float, ...]) -> str:
    """The smallest bound at or above `value` ('Infinity' above them all): the bucket it fell in.

    width_bucket counts the bounds at or below its operand; on the negated bounds that is the
    number of bounds at or above `value`, so a value equal to a bound falls in that bound's
    bucket, as Prometheus' `le` wants. A scalar expression: the backfill is one pass per family.
    """
    bounds_sql = ", ".join(repr(float(b)) for b in bounds)
    negated = ", ".join(repr(-float(b)) for b in reversed(bounds))
    below = f"{len(bounds)} - width_bucket(-({value}), ARRAY[{negated}]::float8[])"
    return f"(ARRAY[{bounds_sql}, 'Infinity']::float8[])[{below} + 1]"


_WAIT_S = "EXTRACT(EPOCH FROM started_at - queued_at)::float8"
_RUN_S = "EXTRACT(EPOCH FROM finished_at - started_at)::float8"
_TIMED = "status = 'COMPLETED' AND started_at IS NOT NULL AND finished_at IS NOT NULL"
_INSERT = "INSERT INTO metric_rollups (family, label, bucket, shard, count, total) "


def upgrade() -> None:
    op.create_table(
        "metric_rollups",
        sa.Column("family", sa.Text(), primary_key=True),
        sa.Column("label", sa.Text(), primary_key=True),
        sa.Column("bucket", sa.Float(), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        postgresql_with={"fillfactor": 50},
    )
    # The `running` attempts are counted from the open ones; a claim also looks its delivery's up.
    op.create_index(
        "webhook_attempts_open",
        "webhook_attempts",
        ["delivery_id"],
        postgresql_where=sa.text("finished_at IS NULL"),
    )

    # The backfill: what a scrape of the rows reported until now, so the counters go on from it.
    op.execute(
        _INSERT + "SELECT 'requests_completed', CASE WHEN error IS NULL THEN 'ok'"
        " ELSE COALESCE(error_type, 'error') END, 'Infinity', 0, count(*), 0"
        " FROM requests WHERE status = 'COMPLETED' GROUP BY 2"
    )
    for family, seconds, bounds in (("queue_wait_seconds", _WAIT_S, _WAIT), ("run_seconds", _RUN_S, _RUN)):
        op.execute(
            _INSERT + f"SELECT '{family}', '', {_le('s', bounds)} AS le, 0, count(*), sum(s) FROM"
            f" (SELECT {seconds} AS s FROM requests WHERE {_TIMED}) t GROUP BY le"
        )
    op.execute(
        _INSERT + f"SELECT 'engine_stage_seconds', key, {_le('s', _STAGE)} AS le, 0, count(*), sum(s) FROM"
        " (SELECT st.key, st.value::text::float8 AS s FROM requests r"
        "  CROSS JOIN LATERAL jsonb_each(r.metrics -> 'stages') AS st"
        "  WHERE r.status = 'COMPLETED' AND jsonb_typeof(r.metrics -> 'stages') = 'object'"
        "    AND jsonb_typeof(st.value) = 'number') t GROUP BY key, le"
    )
    op.execute(
        _INSERT + "SELECT 'webhook_attempts', CASE WHEN status_code BETWEEN 200 AND 299 THEN 'delivered'"
        " WHEN status_code IS NOT NULL THEN 'http_error' ELSE 'error' END, 'Infinity', 0, count(*), 0"
        " FROM webhook_attempts WHERE finished_at IS NOT NULL GROUP BY 2"
    )
    op.execute(
        _INSERT + "SELECT 'webhook_deliveries', state, 'Infinity', 0, count(*), 0"
        " FROM webhook_deliveries WHERE state IN ('delivered', 'failed') GROUP BY state"
    )


def downgrade() -> None:
    op.drop_index("webhook_attempts_open", table_name="webhook_attempts")
    op.drop_table("metric_rollups")
