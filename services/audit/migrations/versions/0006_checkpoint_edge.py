"""a checkpoint keeps its last event's hash and Merkle audit path

Revision ID: 0006_checkpoint_edge
Revises: 0005_gateway_nonces
Create Date: 2026-11-30 03:40:00

The checkpoint job verified the whole chain before every signature: O(all events) a minute,
growing forever. With the hash of a checkpoint's last event and that event's audit path (which
together must give the signed root), the next verification starts after the checkpoint. Both
columns are NULL for checkpoints signed before; the writer's INSERT on the table covers them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_checkpoint_edge"
down_revision: str | None = "0005_gateway_nonces"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_checkpoints", sa.Column("last_hash", sa.String(length=64), nullable=True))
    op.add_column(
        "audit_checkpoints",
        sa.Column("last_path", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("audit_checkpoints", "last_path")
    op.drop_column("audit_checkpoints", "last_hash")
