"""Work orders' own tables. Contact data lives only as AES-GCM ciphertext under a per-customer
data key; the key itself is stored only wrapped (Vault transit, through the secrets service)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from doorward_kit.audit_client import AuditOutboxMixin
from doorward_kit.db import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class OrgSettings(Base):
    """Per-organisation access-window rules; a missing row means the defaults."""

    __tablename__ = "org_settings"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lead_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    grace_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    max_window_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="UTC")
    next_number: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="1")
    # Break-glass needs a second ADMIN's approval (updateBreakGlassPolicy).
    break_glass_second_approver: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default="false"
    )
    updated_at: Mapped[datetime] = _now()


class BreakGlassRequest(Base):
    """One ADMIN's request for a secret outside the normal rules, and what became of it.

    The step-up assertions are identity's signatures over a fresh one-time code of the requester
    (and of the approver); secrets checks them before it issues the grant, once per request.
    They are useless without the requester's own access token. The free-text reason stays here
    (it may name people); audit events carry ids only."""

    __tablename__ = "break_glass_requests"
    __table_args__ = (Index("ix_break_glass_requests_org_id_status", "org_id", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    requester_id: Mapped[str] = mapped_column(String(64), nullable=False)
    secret_ref_id: Mapped[str] = mapped_column(String(36), nullable=False)
    work_order_id: Mapped[str] = mapped_column(String(36), nullable=False)
    site_id: Mapped[str] = mapped_column(String(36), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    # PENDING | APPROVED | DENIED | EXPIRED
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    requires_approval: Mapped[bool] = mapped_column(Boolean, nullable=False)
    step_up: Mapped[str] = mapped_column(Text, nullable=False)
    approver_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approval: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    grant_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    region_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # The data key wrapped by the customer's transit key; None once erased.
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    key_version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # crypto.seal: b"dwc2" || nonce || AES-256-GCM(JSON {name, phone, email}), bound to
    # (customer id, "contact").
    contact: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # GDPR Art. 18: while set, contact data is not decrypted and no job is created, assigned or
    # dispatched for the customer (the data is only stored).
    restricted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    # Set by the retention purge when it deletes the customer's jobs: the latest of their
    # activity, from which contact-data retention still counts.
    last_job_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_customers_org_region", "org_id", "region_id"),)


class CustomerRestriction(Base):
    """Each change of a customer's restriction with its free-text reason (which may name
    people, so it stays here; the audit event carries ids only)."""

    __tablename__ = "customer_restrictions"
    __table_args__ = (Index("ix_customer_restrictions_org_customer", "org_id", "customer_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), nullable=False)
    restricted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    actor_id: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), nullable=False)
    region_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # crypto.seal: b"dwc2" || nonce || AES-256-GCM(address), bound to (customer id,
    # "address", site id).
    address: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_sites_org_customer", "org_id", "customer_id"),)


class SiteSecretRef(Base):
    """Which secret references belong to which site (their metadata is the secrets service's)."""

    __tablename__ = "site_secret_refs"

    secret_ref_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), nullable=False, index=True)
    created_at: Mapped[datetime] = _now()


class WorkOrder(Base):
    __tablename__ = "work_orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    number: Mapped[int] = mapped_column(BigInteger, nullable=False)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), nullable=False, index=True)
    region_id: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    priority: Mapped[str] = mapped_column(String(8), nullable=False)
    scheduled_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scheduled_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    assignee_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        # myJobs and User.assignedWorkOrders: one assignee's jobs by time.
        Index("ix_work_orders_assignee_start", "org_id", "assignee_id", "scheduled_start"),
        # workOrders(): keyset pagination inside an org, optionally by region.
        Index("ix_work_orders_org_created", "org_id", "created_at", "id"),
        Index("ix_work_orders_org_region_created", "org_id", "region_id", "created_at", "id"),
        Index("uq_work_orders_org_number", "org_id", "number", unique=True),
    )


class WorkOrderSecret(Base):
    __tablename__ = "work_order_secrets"

    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id"), primary_key=True)
    secret_ref_id: Mapped[str] = mapped_column(
        ForeignKey("site_secret_refs.secret_ref_id"), primary_key=True
    )
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    attached_by: Mapped[str] = mapped_column(String(64), nullable=False)
    attached_at: Mapped[datetime] = _now()


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    work_order_id: Mapped[str] = mapped_column(
        ForeignKey("work_orders.id"), nullable=False, index=True
    )
    description: Mapped[str] = mapped_column(String(500), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3), nullable=False)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    created_at: Mapped[datetime] = _now()


class WorkNote(Base):
    __tablename__ = "work_notes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    work_order_id: Mapped[str] = mapped_column(
        ForeignKey("work_orders.id"), nullable=False, index=True
    )
    author_id: Mapped[str] = mapped_column(String(64), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()


class SecretsOutbox(Base):
    """RevokeGrants calls owed to the secrets service, written in the same transaction as the
    completion / cancellation / reassignment / rescheduling that makes them due."""

    __tablename__ = "secrets_outbox"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    work_order_id: Mapped[str] = mapped_column(String(36), nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    )
    created_at: Mapped[datetime] = _now()


class AuditOutbox(AuditOutboxMixin, Base):
    __tablename__ = "audit_outbox"


class RetentionPolicyRow(Base):
    """How long each category of data is kept, per organisation (days); no row = defaults."""

    __tablename__ = "retention_policies"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    work_order_days: Mapped[int] = mapped_column(Integer, nullable=False)
    contact_data_days: Mapped[int] = mapped_column(Integer, nullable=False)
    site_secret_days: Mapped[int] = mapped_column(Integer, nullable=False)
    grant_days: Mapped[int] = mapped_column(Integer, nullable=False)
    audit_event_days: Mapped[int] = mapped_column(Integer, nullable=False)
    trace_days: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_by: Mapped[str] = mapped_column(String(64), nullable=False)
    updated_at: Mapped[datetime] = _now()


class LegalHold(Base):
    """A hold on a customer, site or work order: nothing it covers is deleted (by the purge or
    by an erasure) until it is released. The reasons may name a case, so they stay here."""

    __tablename__ = "legal_holds"
    __table_args__ = (Index("ix_legal_holds_org_target", "org_id", "target_type", "target_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # CUSTOMER | SITE | WORK_ORDER
    target_type: Mapped[str] = mapped_column(String(16), nullable=False)
    target_id: Mapped[str] = mapped_column(String(36), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    placed_by: Mapped[str] = mapped_column(String(64), nullable=False)
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    released_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    release_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class PurgeRun(Base):
    """One run of the retention purge (all organisations), with what it deleted."""

    __tablename__ = "purge_runs"
    __table_args__ = (Index("ix_purge_runs_started_at", "started_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    work_orders: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    customers: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    batches: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
