"""the writer may read alembic_version (the service checks its schema at start)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 18:40:00

Since the owner/writer split (services/audit/dbroles.py) the service's login no longer migrates:
it checks that its database is at the newest revision, which needs SELECT on alembic_version.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GRANT_SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doorward_audit_writer') THEN
        GRANT SELECT ON alembic_version TO doorward_audit_writer;
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(GRANT_SQL)


def downgrade() -> None:
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doorward_audit_writer') "
        "THEN REVOKE SELECT ON alembic_version FROM doorward_audit_writer; END IF; END $$"
    )
