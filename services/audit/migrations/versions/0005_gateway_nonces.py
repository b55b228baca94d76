"""the gateway's signature nonces seen by any replica (doorward_kit/nonce_ledger.py)

Revision ID: 0005_gateway_nonces
Revises: 0004_events_by_trace
Create Date: 2026-11-30 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_gateway_nonces"
down_revision: str | None = "0004_events_by_trace"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The writer (the service login is a member) claims nonces and prunes them: this table is no part
# of the trail, so DELETE here gives no power over it.
GRANT_SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doorward_audit_writer') THEN
        GRANT SELECT, INSERT, DELETE ON gateway_nonces TO doorward_audit_writer;
    END IF;
END
$$
"""


def upgrade() -> None:
    # One row per signed subgraph request for about a minute; the primary key is the replay
    # check (INSERT ... ON CONFLICT DO NOTHING), the index serves the prune by age.
    op.create_table(
        "gateway_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_gateway_nonces")),
    )
    op.create_index("ix_gateway_nonces_expires_at", "gateway_nonces", ["expires_at"])
    op.execute(GRANT_SQL)


def downgrade() -> None:
    op.drop_index("ix_gateway_nonces_expires_at", table_name="gateway_nonces")
    op.drop_table("gateway_nonces")
