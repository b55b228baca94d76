"""trace store: the security-ops filter indexes hold only spans that carry the attribute

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 03:30:00

Most spans (HTTP, gRPC, SQL) carry no decision, work order, secret reference or actor, yet
each of the four full indexes took an entry for every span stored: four index insertions per
span that no query reads. Every filter is an equality on its column (`decision = $1`, ...),
which implies `column IS NOT NULL`, so PostgreSQL answers it from the partial index alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# index name -> its columns (the first one is the attribute's column)
INDEXES = {
    "ix_spans_decision": ["decision", "started_at"],
    "ix_spans_work_order": ["work_order_id"],
    "ix_spans_secret_ref": ["secret_ref_id"],
    "ix_spans_actor": ["actor_pseudo_id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="spans")
        op.create_index(
            name, "spans", columns, postgresql_where=sa.text(f"{columns[0]} IS NOT NULL")
        )


def downgrade() -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="spans")
        op.create_index(name, "spans", columns)
