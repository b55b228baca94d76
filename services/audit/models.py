"""The audit database: events (append-only, hash-chained per organisation), the chain head of
each organisation, signed checkpoints and security alerts. See migrations for the role and the
triggers that keep events, checkpoints and alerts append-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from doorward_kit.db import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        # Idempotency key: an org's event ids are unique (and this index serves the check).
        UniqueConstraint("org_id", "id", name="uq_audit_events_org_id_id"),
        Index("ix_audit_events_actor", "org_id", "actor_id", "occurred_at"),
        Index("ix_audit_events_work_order", "org_id", "work_order_id", "seq"),
        Index("ix_audit_events_secret_ref", "org_id", "secret_ref_id", "seq"),
        Index("ix_audit_events_action", "org_id", "action", "target_id"),
        Index("ix_audit_events_occurred", "org_id", "occurred_at"),
        Index("ix_audit_events_trace", "org_id", "trace_id"),
    )

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(36), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    actor_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    action: Mapped[str] = mapped_column(String(128), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    work_order_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    secret_ref_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    target_type: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    target_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    trace_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    source_ip: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    service: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditHead(Base):
    """The newest event of an organisation's chain; locked FOR UPDATE to serialise appends."""

    __tablename__ = "audit_heads"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    signature: Mapped[str] = mapped_column(Text, nullable=False)
    # Not signed, and need not be: with each other they must give root_hash (verify.CheckpointEdge),
    # so the next checkpoint's verification starts here instead of at event 1. NULL on
    # checkpoints signed before they were kept (verification then starts at the beginning).
    last_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_path: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)


class AuditPrune(Base):
    """A signed anchor standing for a pruned prefix 1..tree_size of an organisation's chain
    (see signing.PruneAnchor); append-only."""

    __tablename__ = "audit_prunes"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    last_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    frontier: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    signature: Mapped[str] = mapped_column(Text, nullable=False)
    pruned_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class SecurityAlert(Base):
    __tablename__ = "security_alerts"
    __table_args__ = (
        # One alert per rule, actor and time bucket (or per triggering event).
        UniqueConstraint("org_id", "dedup_key", name="uq_security_alerts_dedup"),
        Index("ix_security_alerts_org_raised", "org_id", "raised_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), nullable=False)
    rule: Mapped[str] = mapped_column(String(64), nullable=False)
    actor_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    dedup_key: Mapped[str] = mapped_column(String(300), nullable=False)
    trigger_event_id: Mapped[str] = mapped_column(String(36), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    raised_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    alert_event_id: Mapped[str] = mapped_column(String(36), nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
