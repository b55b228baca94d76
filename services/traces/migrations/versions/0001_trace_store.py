"""trace store: spans, trace summaries, metric points

Revision ID: 0001
Revises:
Create Date: 2026-11-29 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_us", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attributes", postgresql.JSONB, nullable=False),
        sa.Column("events", postgresql.JSONB, nullable=False),
        sa.Column("org_id", sa.String(64)),
        sa.Column("decision", sa.String(8)),
        sa.Column("reason", sa.String(64)),
        sa.Column("work_order_id", sa.String(128)),
        sa.Column("secret_ref_id", sa.String(128)),
        sa.Column("actor_pseudo_id", sa.String(128)),
        sa.PrimaryKeyConstraint("trace_id", "span_id", name="pk_spans"),
    )
    op.create_index("ix_spans_started_at", "spans", ["started_at"])
    op.create_index("ix_spans_decision", "spans", ["decision", "started_at"])
    op.create_index("ix_spans_work_order", "spans", ["work_order_id"])
    op.create_index("ix_spans_secret_ref", "spans", ["secret_ref_id"])
    op.create_index("ix_spans_actor", "spans", ["actor_pseudo_id"])
    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.String(64)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("services", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("trace_id", name="pk_traces"),
    )
    op.create_index("ix_traces_org_started", "traces", ["org_id", "started_at"])
    op.create_index("ix_traces_ended_at", "traces", ["ended_at"])
    op.create_table(
        "metric_points",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("count", sa.BigInteger),
        sa.Column("attributes", postgresql.JSONB, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metric_points"),
    )
    op.create_index("ix_metric_points_name_at", "metric_points", ["name", "at"])
    op.create_index("ix_metric_points_at", "metric_points", ["at"])


def downgrade() -> None:
    op.drop_table("metric_points")
    op.drop_table("traces")
    op.drop_table("spans")
