"""The trace store's database: spans, one summary row per trace, metric points.

Spans arrive in any order and possibly twice (an exporter retries): (trace_id, span_id) is the
key and a repeat is ignored. The decision convention's attributes are copied into columns so the
security-ops filters (decision, reason, work order, secret reference, actor) use indexes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Float, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from doorward_kit.db import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


class Span(Base):
    __tablename__ = "spans"
    # The filter indexes are partial (migration 0003): most spans carry none of these
    # attributes, and an equality filter on the column implies it is not null.
    __table_args__ = (
        Index("ix_spans_started_at", "started_at"),
        Index(
            "ix_spans_decision",
            "decision",
            "started_at",
            postgresql_where=text("decision IS NOT NULL"),
        ),
        Index(
            "ix_spans_work_order",
            "work_order_id",
            postgresql_where=text("work_order_id IS NOT NULL"),
        ),
        Index(
            "ix_spans_secret_ref",
            "secret_ref_id",
            postgresql_where=text("secret_ref_id IS NOT NULL"),
        ),
        Index(
            "ix_spans_actor",
            "actor_pseudo_id",
            postgresql_where=text("actor_pseudo_id IS NOT NULL"),
        ),
    )

    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    span_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    parent_span_id: Mapped[str | None] = mapped_column(String(16))
    service: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    duration_us: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    events: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, default=list)
    org_id: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str | None] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(64))
    work_order_id: Mapped[str | None] = mapped_column(String(128))
    secret_ref_id: Mapped[str | None] = mapped_column(String(128))
    actor_pseudo_id: Mapped[str | None] = mapped_column(String(128))


class Trace(Base):
    """Summary of one trace, kept current as its spans arrive (for listing and org scoping)."""

    __tablename__ = "traces"
    __table_args__ = (
        Index("ix_traces_org_started", "org_id", "started_at"),
        Index("ix_traces_ended_at", "ended_at"),
    )

    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    services: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list)
    span_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (
        Index("ix_metric_points_name_at", "name", "at"),
        Index("ix_metric_points_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    service: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    count: Mapped[int | None] = mapped_column(BigInteger)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)


class OrgRetention(Base):
    """An organisation's trace retention in days (its retention policy's traceDays, set by
    workorders' purge through SetOrgRetention); organisations without a row get the store's."""

    __tablename__ = "org_retention"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
