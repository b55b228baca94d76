"""All SQL of the trace store. Reads are always scoped to one organisation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, any_, exists, literal, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.traces.models import OrgRetention, Span, Trace
from services.traces.otlp import MetricRecord, SpanRecord

ORG_KEY = "doorward.org.id"
# A trace whose spans name two organisations belongs to nobody: whoever can reach the receiver
# (it takes spans from any local process) must not be able to claim another organisation's
# trace by sending a span with its trace id first. No organisation id contains "!".
CONFLICT_ORG = "!conflict"


# One export is one statement: its spans go in as column arrays (unnest), the ones not stored
# before (an exporter's retry is ignored by the key) are folded into their traces' summary rows
# in the same statement, and it answers how many spans were new. The SQL text never changes
# with the batch's size, so PostgreSQL and asyncpg prepare it once per connection; a
# many-row VALUES insert was a new statement (compiled by SQLAlchemy, prepared by asyncpg) for
# every size of batch, with 17 bind parameters per span, and a second one for the summaries.
#
# Lock order: spans are inserted in key order (the arrays arrive sorted), summaries upserted in
# trace id order (ORDER BY). Five processes export spans of the same traces at the same
# moment, each batch in its own order; unsorted, two of them deadlocked and PostgreSQL aborted
# one (the e2e saw traces without workorders' spans). One order for every export.
#
# A trace's organisation: the one its spans name; two different ones make it CONFLICT_ORG
# ('!conflict', written out below: nobody's), here and against what the summary row says.
INSERT_SPANS = text(
    """
WITH incoming AS (
    SELECT * FROM unnest(
        CAST(:trace_id AS text[]), CAST(:span_id AS text[]), CAST(:parent_span_id AS text[]),
        CAST(:service AS text[]), CAST(:name AS text[]), CAST(:kind AS text[]),
        CAST(:start_us AS bigint[]), CAST(:duration_us AS bigint[]), CAST(:status AS text[]),
        CAST(:attributes AS text[]), CAST(:events AS text[]), CAST(:org_id AS text[]),
        CAST(:decision AS text[]), CAST(:reason AS text[]), CAST(:work_order_id AS text[]),
        CAST(:secret_ref_id AS text[]), CAST(:actor_pseudo_id AS text[])
    ) WITH ORDINALITY AS r(
        trace_id, span_id, parent_span_id, service, name, kind, start_us, duration_us, status,
        attributes, events, org_id, decision, reason, work_order_id, secret_ref_id,
        actor_pseudo_id, n
    )
), new AS (
    INSERT INTO spans (
        trace_id, span_id, parent_span_id, service, name, kind, started_at, duration_us,
        status, attributes, events, org_id, decision, reason, work_order_id, secret_ref_id,
        actor_pseudo_id
    )
    SELECT trace_id, span_id, parent_span_id, service, name, kind,
           timestamptz 'epoch' + start_us * interval '1 microsecond', duration_us, status,
           attributes::jsonb, events::jsonb, org_id, decision, reason, work_order_id,
           secret_ref_id, actor_pseudo_id
    FROM incoming ORDER BY n
    ON CONFLICT (trace_id, span_id) DO NOTHING
    RETURNING trace_id, service, org_id, started_at, duration_us
), merged AS (
    INSERT INTO traces (trace_id, org_id, started_at, ended_at, services, span_count)
    SELECT trace_id,
           CASE WHEN count(DISTINCT org_id) > 1 THEN '!conflict' ELSE max(org_id) END,
           min(started_at),
           max(started_at + duration_us * interval '1 microsecond'),
           array_agg(DISTINCT service ORDER BY service),
           count(*)
    FROM new GROUP BY trace_id ORDER BY trace_id
    ON CONFLICT (trace_id) DO UPDATE SET
        org_id = CASE
            WHEN traces.org_id IS NULL THEN excluded.org_id
            WHEN excluded.org_id IS NULL THEN traces.org_id
            WHEN traces.org_id = excluded.org_id THEN traces.org_id
            ELSE '!conflict'
        END,
        started_at = least(traces.started_at, excluded.started_at),
        ended_at = greatest(traces.ended_at, excluded.ended_at),
        services = ARRAY(SELECT DISTINCT unnest(traces.services || excluded.services)),
        span_count = traces.span_count + excluded.span_count
)
SELECT count(*) FROM new
"""
)

INSERT_POINTS = text(
    """
INSERT INTO metric_points (name, service, kind, at, value, count, attributes)
SELECT name, service, kind, at, value, count, attributes::jsonb
FROM unnest(
    CAST(:name AS text[]), CAST(:service AS text[]), CAST(:kind AS text[]),
    CAST(:at AS timestamptz[]), CAST(:value AS float8[]), CAST(:count AS bigint[]),
    CAST(:attributes AS text[])
) AS p(name, service, kind, at, value, count, attributes)
"""
)


def _span_columns(records: Sequence[SpanRecord]) -> dict[str, list[Any]]:
    """The parameters of INSERT_SPANS: one list per column, rows in key order, each key once."""
    by_key = {(r.trace_id, r.span_id): r for r in records}
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_us",
            "duration_us", "status", "attributes", "events", "org_id", "decision", "reason",
            "work_order_id", "secret_ref_id", "actor_pseudo_id",
        )
    }  # fmt: skip
    appends = [columns[name].append for name in columns]
    dumps = json.dumps
    for key in sorted(by_key):
        r = by_key[key]
        attributes = r.attributes
        values = (
            r.trace_id,
            r.span_id,
            r.parent_span_id,
            r.service,
            r.name,
            r.kind,
            r.start_us,
            r.duration_us,
            r.status,
            dumps(attributes) if attributes else "{}",
            dumps(r.events) if r.events else "[]",
            r.attribute(ORG_KEY),
            r.attribute("doorward.decision"),
            r.attribute("doorward.decision.reason"),
            r.attribute("doorward.work_order.id"),
            r.attribute("doorward.secret_ref.id"),
            r.attribute("enduser.pseudo.id"),
        )
        for append, value in zip(appends, values, strict=True):
            append(value)
    return columns


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    org_id: str | None
    started_at: datetime
    ended_at: datetime
    services: list[str]
    span_count: int


@dataclass(frozen=True)
class TraceQuery:
    """The contract's TraceFilter, actor already turned into its pseudonym."""

    decision: str | None = None
    reason: str | None = None
    work_order_id: str | None = None
    secret_ref_id: str | None = None
    actor_pseudo_id: str | None = None
    service: str | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
    # Only these traces (None: no such restriction; empty: nothing matches).
    trace_ids: tuple[str, ...] | None = None


class TraceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_spans(self, records: Sequence[SpanRecord]) -> int:
        """Store spans not stored before and fold them into their traces' summaries, in one
        statement (atomic on its own); returns how many were new."""
        if not records:
            return 0
        result = await self.session.execute(INSERT_SPANS, _span_columns(records))
        return int(result.scalar_one())

    async def add_metric_points(self, records: Sequence[MetricRecord]) -> int:
        """One statement of the same text for any number of points (column arrays)."""
        if not records:
            return 0
        await self.session.execute(
            INSERT_POINTS,
            {
                "name": [r.name for r in records],
                "service": [r.service for r in records],
                "kind": [r.kind for r in records],
                "at": [r.at for r in records],
                "value": [r.value for r in records],
                "count": [r.count for r in records],
                "attributes": [json.dumps(r.attributes) for r in records],
            },
        )
        return len(records)

    async def trace(self, org_id: str, trace_id: str) -> TraceSummary | None:
        row = (
            await self.session.execute(
                select(Trace).where(Trace.trace_id == trace_id, Trace.org_id == org_id)
            )
        ).scalar_one_or_none()
        return _summary(row) if row is not None else None

    async def spans_of(self, trace_id: str) -> list[Span]:
        result = await self.session.execute(
            select(Span).where(Span.trace_id == trace_id).order_by(Span.started_at, Span.span_id)
        )
        return list(result.scalars())

    async def traces(
        self,
        org_id: str,
        query: TraceQuery,
        first: int,
        after: tuple[datetime, str] | None,
    ) -> list[TraceSummary]:
        """Newest first, keyset-paged by (started_at, trace_id)."""
        conditions = [Trace.org_id == org_id]
        if query.started_from is not None:
            conditions.append(Trace.started_at >= query.started_from)
        if query.started_to is not None:
            conditions.append(Trace.started_at < query.started_to)
        if query.service is not None:
            # Spans name their process `doorward-<svc>` (service.name); `secrets` finds those too.
            names = {query.service, f"doorward-{query.service}"}
            conditions.append(or_(*(literal(n) == any_(Trace.services) for n in names)))
        if query.trace_ids is not None:
            conditions.append(Trace.trace_id.in_(query.trace_ids))
        span_conditions = []
        for column, value in (
            (Span.decision, query.decision),
            (Span.reason, query.reason),
            (Span.work_order_id, query.work_order_id),
            (Span.secret_ref_id, query.secret_ref_id),
            (Span.actor_pseudo_id, query.actor_pseudo_id),
        ):
            if value is not None:
                span_conditions.append(column == value)
        if span_conditions:
            conditions.append(
                exists().where(Span.trace_id == Trace.trace_id, and_(*span_conditions))
            )
        if after is not None:
            at, trace_id = after
            conditions.append(
                or_(Trace.started_at < at, and_(Trace.started_at == at, Trace.trace_id < trace_id))
            )
        result = await self.session.execute(
            select(Trace)
            .where(*conditions)
            .order_by(Trace.started_at.desc(), Trace.trace_id.desc())
            .limit(first)
        )
        return [_summary(row) for row in result.scalars()]

    async def prune(self, before: datetime, batch: int) -> int:
        """Delete up to `batch` spans and metric points from before `before`, and the traces
        that ended before it; returns the rows deleted (0 once nothing is left). Small batches
        keep each transaction short while the receiver goes on writing."""
        params = {"before": before, "batch": batch}
        spans = await self.session.execute(
            text(
                "DELETE FROM spans WHERE ctid IN "
                "(SELECT ctid FROM spans WHERE started_at < :before LIMIT :batch)"
            ),
            params,
        )
        points = await self.session.execute(
            text(
                "DELETE FROM metric_points WHERE ctid IN "
                "(SELECT ctid FROM metric_points WHERE at < :before LIMIT :batch)"
            ),
            params,
        )
        traces = await self.session.execute(
            text(
                "DELETE FROM traces WHERE ctid IN "
                "(SELECT ctid FROM traces WHERE ended_at < :before LIMIT :batch)"
            ),
            params,
        )
        counts: list[int] = [r.rowcount or 0 for r in (spans, points, traces)]  # type: ignore[attr-defined]
        return sum(counts)

    async def prune_org(self, org_id: str, before: datetime, batch: int) -> int:
        """Delete up to `batch` of one organisation's traces that ended before `before`, with
        their spans (a trace's organisation is its summary's); returns the rows deleted."""
        params = {"org_id": org_id, "before": before, "batch": batch}
        doomed = await self.session.execute(
            text(
                "SELECT trace_id FROM traces WHERE org_id = :org_id AND ended_at < :before "
                "ORDER BY ended_at LIMIT :batch FOR UPDATE SKIP LOCKED"
            ),
            params,
        )
        ids = [r[0] for r in doomed]
        if not ids:
            return 0
        spans = await self.session.execute(
            text("DELETE FROM spans WHERE trace_id = ANY(:ids)"), {"ids": ids}
        )
        traces = await self.session.execute(
            text("DELETE FROM traces WHERE trace_id = ANY(:ids)"), {"ids": ids}
        )
        counts: list[int] = [r.rowcount or 0 for r in (spans, traces)]  # type: ignore[attr-defined]
        return sum(counts)

    # ---- organisations' retention -----------------------------------------------------------

    async def org_retentions(self) -> dict[str, int]:
        rows = await self.session.execute(select(OrgRetention.org_id, OrgRetention.days))
        return {org_id: days for org_id, days in rows}

    async def save_org_retention(self, org_id: str, days: int, now: datetime) -> None:
        statement = insert(OrgRetention).values(org_id=org_id, days=days, updated_at=now)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[OrgRetention.org_id],
                set_={"days": statement.excluded.days, "updated_at": statement.excluded.updated_at},
            )
        )


def _summary(row: Trace) -> TraceSummary:
    return TraceSummary(
        trace_id=row.trace_id,
        org_id=row.org_id,
        started_at=row.started_at,
        ended_at=row.ended_at,
        services=list(row.services),
        span_count=row.span_count,
    )
