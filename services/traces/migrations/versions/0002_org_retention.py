"""trace store: each organisation's trace retention (its retention policy's traceDays)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "org_retention",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_org_retention"),
        sa.CheckConstraint("days BETWEEN 1 AND 3650", name="ck_org_retention_days"),
    )


def downgrade() -> None:
    op.drop_table("org_retention")
