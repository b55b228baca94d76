"""retention policy per organisation, legal holds, and the purge job's runs

Revision ID: 0004_retention
Revises: 0003_restriction
Create Date: 2026-11-29 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_retention"
down_revision: str | None = "0003_restriction"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # When the customer's last job ended, kept when the purge deletes that job: contact-data
    # retention counts from it, not from a job record that is gone.
    op.add_column("customers", sa.Column("last_job_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "retention_policies",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("work_order_days", sa.Integer(), nullable=False),
        sa.Column("contact_data_days", sa.Integer(), nullable=False),
        sa.Column("site_secret_days", sa.Integer(), nullable=False),
        sa.Column("grant_days", sa.Integer(), nullable=False),
        sa.Column("audit_event_days", sa.Integer(), nullable=False),
        sa.Column("trace_days", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_retention_policies")),
    )
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.String(length=64), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_by", sa.String(length=64), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    op.create_index(
        "ix_legal_holds_org_target", "legal_holds", ["org_id", "target_type", "target_id"]
    )
    op.create_table(
        "purge_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        # RUNNING until it finishes; a RUNNING row whose process died is taken over by the next.
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("work_orders", sa.Integer(), server_default="0", nullable=False),
        sa.Column("customers", sa.Integer(), server_default="0", nullable=False),
        sa.Column("batches", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purge_runs")),
    )
    op.create_index("ix_purge_runs_started_at", "purge_runs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_purge_runs_started_at", table_name="purge_runs")
    op.drop_table("purge_runs")
    op.drop_index("ix_legal_holds_org_target", table_name="legal_holds")
    op.drop_table("legal_holds")
    op.drop_table("retention_policies")
    op.drop_column("customers", "last_job_at")
