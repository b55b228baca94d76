"""one grant per verified break-glass request

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 18:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "grants", sa.Column("break_glass_request_id", sa.String(length=36), nullable=True)
    )
    op.create_unique_constraint(
        op.f("uq_grants_break_glass_request_id"), "grants", ["break_glass_request_id"]
    )


def downgrade() -> None:
    op.drop_constraint(op.f("uq_grants_break_glass_request_id"), "grants", type_="unique")
    op.drop_column("grants", "break_glass_request_id")
