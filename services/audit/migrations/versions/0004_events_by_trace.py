"""an index for an organisation's events of one trace (Trace.auditEvents, traces by actor)

Revision ID: 0004_events_by_trace
Revises: 0003_prunes
Create Date: 2026-11-29 21:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_events_by_trace"
down_revision: str | None = "0003_prunes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_events_trace", "audit_events", ["org_id", "trace_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_trace", table_name="audit_events")
