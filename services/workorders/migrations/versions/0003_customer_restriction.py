"""restriction of processing (GDPR Art. 18) on customers, with the history of its changes

Revision ID: 0003_restriction
Revises: 0002_break_glass
Create Date: 2026-11-29 21:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_restriction"
down_revision: str | None = "0002_break_glass"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column("restricted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        "customer_restrictions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_restrictions_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_restrictions")),
    )
    op.create_index(
        "ix_customer_restrictions_org_customer",
        "customer_restrictions",
        ["org_id", "customer_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_customer_restrictions_org_customer", table_name="customer_restrictions")
    op.drop_table("customer_restrictions")
    op.drop_column("customers", "restricted")
