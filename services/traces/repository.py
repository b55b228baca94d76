"""All SQL of the trace store. Reads are always scoped to one organisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, any_, case, exists, func, literal, literal_column, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.traces.models import MetricPoint, OrgRetention, Span, Trace
from services.traces.otlp import MetricRecord, SpanRecord

ORG_KEY = "doorward.org.id"
# A trace whose spans name two organisations belongs to nobody: whoever can reach the receiver
# (it takes spans from any local process) must not be able to claim another organisation's
# trace by sending a span with its trace id first. No organisation id contains "!".
CONFLICT_ORG = "!conflict"


def _merged_org(current: str | None, incoming: str | None) -> str | None:
    if current is None or incoming is None or current == incoming:
        return current or incoming
    return CONFLICT_ORG


def _span_row(record: SpanRecord) -> dict[str, Any]:
    return {
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "parent_span_id": record.parent_span_id,
        "service": record.service,
        "name": record.name,
        "kind": record.kind,
        "started_at": record.started_at,
        "duration_us": record.duration_us,
        "status": record.status,
        "attributes": record.attributes,
        "events": record.events,
        "org_id": record.attribute(ORG_KEY),
        "decision": record.attribute("doorward.decision"),
        "reason": record.attribute("doorward.decision.reason"),
        "work_order_id": record.attribute("doorward.work_order.id"),
        "secret_ref_id": record.attribute("doorward.secret_ref.id"),
        "actor_pseudo_id": record.attribute("enduser.pseudo.id"),
    }


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

    async def add_spans(self, records: Sequence[SpanRecord]) -> list[SpanRecord]:
        """Insert spans, ignoring ones already stored; returns the ones that were new."""
        if not records:
            return []
        by_key = {(r.trace_id, r.span_id): r for r in records}
        # Rows in key order: two exports that share keys (an exporter's retry beside the first
        # attempt) then wait on each other in one order instead of deadlocking.
        statement = (
            insert(Span)
            .values([_span_row(by_key[key]) for key in sorted(by_key)])
            .on_conflict_do_nothing(index_elements=["trace_id", "span_id"])
            .returning(Span.trace_id, Span.span_id)
        )
        inserted = (await self.session.execute(statement)).all()
        return [by_key[(row.trace_id, row.span_id)] for row in inserted]

    async def merge_traces(self, new_spans: Sequence[SpanRecord]) -> None:
        """Fold newly stored spans into their traces' summary rows (one statement)."""
        summaries: dict[str, dict[str, Any]] = {}
        for span in new_spans:
            end = span.started_at.timestamp() + span.duration_us / 1e6
            row = summaries.setdefault(
                span.trace_id,
                {
                    "trace_id": span.trace_id,
                    "org_id": None,
                    "started_at": span.started_at,
                    "ended_at": span.started_at,
                    "services": [],
                    "span_count": 0,
                    "_end": end,
                },
            )
            row["org_id"] = _merged_org(row["org_id"], span.attribute(ORG_KEY))
            row["started_at"] = min(row["started_at"], span.started_at)
            if end >= row["_end"]:
                row["_end"] = end
            if span.service not in row["services"]:
                row["services"].append(span.service)
            row["span_count"] += 1
        if not summaries:
            return
        rows = []
        # Upserts lock their trace rows in VALUES order. Five processes export spans of the
        # same traces at the same moment, each batch in its own order: unsorted, two of them
        # deadlocked, PostgreSQL aborted one and that process's whole batch was lost (the e2e
        # saw traces without workorders' spans). One order (trace id) for every export.
        for _, row in sorted(summaries.items()):
            end_ts = row.pop("_end")
            row["ended_at"] = datetime.fromtimestamp(end_ts, tz=row["started_at"].tzinfo)
            rows.append(row)
        stmt = insert(Trace).values(rows)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["trace_id"],
            set_={
                "org_id": case(
                    (Trace.org_id.is_(None), excluded.org_id),
                    (excluded.org_id.is_(None), Trace.org_id),
                    (Trace.org_id == excluded.org_id, Trace.org_id),
                    else_=literal(CONFLICT_ORG),
                ),
                "started_at": func.least(Trace.started_at, excluded.started_at),
                "ended_at": func.greatest(Trace.ended_at, excluded.ended_at),
                "services": literal_column(
                    "ARRAY(SELECT DISTINCT unnest(traces.services || excluded.services))"
                ),
                "span_count": Trace.span_count + excluded.span_count,
            },
        )
        await self.session.execute(stmt)

    async def add_metric_points(self, records: Sequence[MetricRecord]) -> int:
        if not records:
            return 0
        await self.session.execute(
            insert(MetricPoint).values(
                [
                    {
                        "name": r.name,
                        "service": r.service,
                        "kind": r.kind,
                        "at": r.at,
                        "value": r.value,
                        "count": r.count,
                        "attributes": r.attributes,
                    }
                    for r in records
                ]
            )
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
