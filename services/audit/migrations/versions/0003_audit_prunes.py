"""pruning the audit trail past retention, behind a signed prune anchor

Revision ID: 0003_prunes
Revises: 0002
Create Date: 2026-11-29 21:35:00

- `audit_prunes`: one signed anchor per prune (append-only like checkpoints): the chain head,
  Merkle root and frontier of the pruned prefix; verification of the rest starts from it.
- `doorward_audit_prune(org, through)`: the one way to delete events. SECURITY DEFINER (runs as
  the owner, who alone holds DELETE): it deletes the prefix 1..through of one organisation only
  when a prune anchor for exactly that prefix was stored first and every event in it is older
  than six months (the least retention anybody may set), whatever the caller says.
- The append-only trigger lets that function's DELETE on audit_events through (it marks its
  own transaction); every other UPDATE, DELETE or TRUNCATE is still refused. The writer (the
  service's login) still has no DELETE: it may only EXECUTE the function.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_prunes"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION doorward_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events'
            AND current_setting('doorward.audit_prune', true) = 'on' THEN
        RETURN NULL;  -- doorward_audit_prune, inside its own checks
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

OLD_REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION doorward_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

PRUNE_FUNCTION = """
CREATE FUNCTION doorward_audit_prune(p_org text, p_through bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema} AS $$
DECLARE
    deleted bigint;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM {schema}.audit_prunes WHERE org_id = p_org AND tree_size = p_through
    ) THEN
        RAISE EXCEPTION 'no prune anchor for % events of this organisation', p_through
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (
        SELECT 1 FROM {schema}.audit_events
        WHERE org_id = p_org AND seq <= p_through
          AND occurred_at >= now() - interval '183 days'
    ) THEN
        RAISE EXCEPTION 'audit events younger than six months are never pruned'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('doorward.audit_prune', 'on', true);
    DELETE FROM {schema}.audit_events WHERE org_id = p_org AND seq <= p_through;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('doorward.audit_prune', 'off', true);
    RETURN deleted;
END
$$
"""

GRANT_SQL = """
DO $$
BEGIN
    REVOKE ALL ON FUNCTION doorward_audit_prune(text, bigint) FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doorward_audit_writer') THEN
        GRANT SELECT, INSERT ON audit_prunes TO doorward_audit_writer;
        GRANT EXECUTE ON FUNCTION doorward_audit_prune(text, bigint) TO doorward_audit_writer;
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_prunes",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("frontier", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column(
            "pruned_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("org_id", "tree_size", name=op.f("pk_audit_prunes")),
    )
    op.execute(
        "CREATE TRIGGER audit_prunes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
        "ON audit_prunes FOR EACH STATEMENT EXECUTE FUNCTION doorward_audit_refuse_change()"
    )
    op.execute(REFUSE_FUNCTION)
    schema = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one()
    op.execute(PRUNE_FUNCTION.replace("{schema}", f'"{schema}"'))
    op.execute(GRANT_SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS doorward_audit_prune(text, bigint)")
    op.execute(OLD_REFUSE_FUNCTION)
    op.execute("DROP TRIGGER IF EXISTS audit_prunes_append_only ON audit_prunes")
    op.drop_table("audit_prunes")
