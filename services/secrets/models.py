"""The secrets service's tables. No value, no Vault token: only metadata, hashes and accessors.

Ids are random UUID strings; `kv_path` is a separate random id, so a secret_ref id reveals
nothing about where the value lives, and neither reveals the org's names or labels.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from doorward_kit.audit_client import AuditOutboxMixin
from doorward_kit.db import new_metadata


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = new_metadata()


class SecretRef(Base):
    __tablename__ = "secret_refs"
    __table_args__ = (Index("ix_secret_refs_org_id_site_id", "org_id", "site_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str] = mapped_column(String(64))
    region_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    label: Mapped[str] = mapped_column(String(200))
    # 0 until the first value is uploaded; then the KV v2 version of the current value.
    version: Mapped[int] = mapped_column(Integer, default=0)
    # Path inside the KV mount: orgs/<org>/secrets/<random hex>. Opaque: it lands in spans.
    kv_path: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # DeleteSiteSecrets: every version destroyed in Vault; the row stays as a tombstone.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UploadSlot(Base):
    """An upload token's registry entry: who may upload which secret until when."""

    __tablename__ = "upload_slots"
    __table_args__ = (Index("ix_upload_slots_org_id_user_id", "org_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    secret_ref_id: Mapped[str] = mapped_column(String(36), index=True)
    site_id: Mapped[str] = mapped_column(String(64))
    # KV version the slot was prepared against (check-and-set: a concurrent rotation loses).
    base_version: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64))
    wrap_accessor: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # Set once nothing of this slot is left in Vault (unwrapped, revoked or expired there).
    vault_clean: Mapped[bool] = mapped_column(Boolean, default=False)


class Grant(Base):
    """A reveal grant: one user, one work order, one secret version, once, until expires_at."""

    __tablename__ = "grants"
    __table_args__ = (
        Index("ix_grants_org_id_work_order_id", "org_id", "work_order_id"),
        Index("ix_grants_org_id_user_id", "org_id", "user_id"),
        Index("ix_grants_org_id_site_id", "org_id", "site_id"),
        # The sweeper's query: grants whose Vault-side token may still exist.
        Index("ix_grants_vault_clean_expires_at", "vault_clean", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    work_order_id: Mapped[str] = mapped_column(String(64))
    secret_ref_id: Mapped[str] = mapped_column(String(36))
    site_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The workorders break-glass request this grant answers (unique: one grant per approval).
    break_glass_request_id: Mapped[str | None] = mapped_column(
        String(36), nullable=True, unique=True
    )
    token_hash: Mapped[str] = mapped_column(String(64))
    wrap_accessor: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    vault_clean: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditOutbox(AuditOutboxMixin, Base):
    __tablename__ = "audit_outbox"


class RateCounter(Base):
    """Requests per key (`<limit>:<org>/<user>`) per fixed window, shared by every replica: a
    user's limit holds however the requests are spread over them (services/secrets/ratelimit)."""

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer, nullable=False)
