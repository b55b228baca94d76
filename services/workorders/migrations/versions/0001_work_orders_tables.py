"""work orders tables

Revision ID: 0001
Revises:
Create Date: 2026-11-23 10:28:01.694669
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "audit_outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_outbox")),
    )
    op.create_index(
        op.f("ix_audit_outbox_next_attempt_at"), "audit_outbox", ["next_attempt_at"], unique=False
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("key_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("contact", sa.LargeBinary(), nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
    )
    op.create_index(op.f("ix_customers_org_id"), "customers", ["org_id"], unique=False)
    op.create_index("ix_customers_org_region", "customers", ["org_id", "region_id"], unique=False)
    op.create_table(
        "org_settings",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("lead_minutes", sa.Integer(), nullable=False),
        sa.Column("grace_minutes", sa.Integer(), nullable=False),
        sa.Column("max_window_minutes", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("next_number", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_settings")),
    )
    op.create_table(
        "secrets_outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("work_order_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secrets_outbox")),
    )
    op.create_index(
        op.f("ix_secrets_outbox_next_attempt_at"),
        "secrets_outbox",
        ["next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_sites_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
    )
    op.create_index("ix_sites_org_customer", "sites", ["org_id", "customer_id"], unique=False)
    op.create_table(
        "site_secret_refs",
        sa.Column("secret_ref_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=36), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_site_secret_refs_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("secret_ref_id", name=op.f("pk_site_secret_refs")),
    )
    op.create_index(
        op.f("ix_site_secret_refs_site_id"), "site_secret_refs", ["site_id"], unique=False
    )
    op.create_table(
        "work_orders",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("site_id", sa.String(length=36), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("scheduled_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scheduled_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assignee_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_work_orders_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_orders")),
    )
    op.create_index(
        "ix_work_orders_assignee_start",
        "work_orders",
        ["org_id", "assignee_id", "scheduled_start"],
        unique=False,
    )
    op.create_index(
        "ix_work_orders_org_created", "work_orders", ["org_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_work_orders_org_region_created",
        "work_orders",
        ["org_id", "region_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(op.f("ix_work_orders_site_id"), "work_orders", ["site_id"], unique=False)
    op.create_index("uq_work_orders_org_number", "work_orders", ["org_id", "number"], unique=True)
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("work_order_id", sa.String(length=36), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=12, scale=3), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_invoice_lines_work_order_id_work_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    op.create_index(
        op.f("ix_invoice_lines_work_order_id"), "invoice_lines", ["work_order_id"], unique=False
    )
    op.create_table(
        "work_notes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("work_order_id", sa.String(length=36), nullable=False),
        sa.Column("author_id", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_work_notes_work_order_id_work_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_notes")),
    )
    op.create_index(
        op.f("ix_work_notes_work_order_id"), "work_notes", ["work_order_id"], unique=False
    )
    op.create_table(
        "work_order_secrets",
        sa.Column("work_order_id", sa.String(length=36), nullable=False),
        sa.Column("secret_ref_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("attached_by", sa.String(length=64), nullable=False),
        sa.Column(
            "attached_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["secret_ref_id"],
            ["site_secret_refs.secret_ref_id"],
            name=op.f("fk_work_order_secrets_secret_ref_id_site_secret_refs"),
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_work_order_secrets_work_order_id_work_orders"),
        ),
        sa.PrimaryKeyConstraint(
            "work_order_id", "secret_ref_id", name=op.f("pk_work_order_secrets")
        ),
    )


def downgrade() -> None:

    op.drop_table("work_order_secrets")
    op.drop_index(op.f("ix_work_notes_work_order_id"), table_name="work_notes")
    op.drop_table("work_notes")
    op.drop_index(op.f("ix_invoice_lines_work_order_id"), table_name="invoice_lines")
    op.drop_table("invoice_lines")
    op.drop_index("uq_work_orders_org_number", table_name="work_orders")
    op.drop_index(op.f("ix_work_orders_site_id"), table_name="work_orders")
    op.drop_index("ix_work_orders_org_region_created", table_name="work_orders")
    op.drop_index("ix_work_orders_org_created", table_name="work_orders")
    op.drop_index("ix_work_orders_assignee_start", table_name="work_orders")
    op.drop_table("work_orders")
    op.drop_index(op.f("ix_site_secret_refs_site_id"), table_name="site_secret_refs")
    op.drop_table("site_secret_refs")
    op.drop_index("ix_sites_org_customer", table_name="sites")
    op.drop_table("sites")
    op.drop_index(op.f("ix_secrets_outbox_next_attempt_at"), table_name="secrets_outbox")
    op.drop_table("secrets_outbox")
    op.drop_table("org_settings")
    op.drop_index("ix_customers_org_region", table_name="customers")
    op.drop_index(op.f("ix_customers_org_id"), table_name="customers")
    op.drop_table("customers")
    op.drop_index(op.f("ix_audit_outbox_next_attempt_at"), table_name="audit_outbox")
    op.drop_table("audit_outbox")
