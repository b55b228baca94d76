"""The trace store's rules: ingest (idempotent), read one organisation's traces, prune by age.

No FastAPI, gRPC or strawberry here: adapters translate, this decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.errors import DoorwardError, ErrorCode
from services.traces.models import Span
from services.traces.otlp import MetricRecord, SpanRecord
from services.traces.repository import (
    CONFLICT_ORG,
    TraceQuery,
    TraceRepository,
    TraceSummary,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Largest page a reader may ask for, and most trace ids one query may be restricted to.
MAX_PAGE = 500
MAX_TRACE_IDS = 1000
# Most days an organisation's trace retention may say (workorders' BOUNDS["trace_days"]).
MAX_ORG_DAYS = 3650


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TraceView:
    summary: TraceSummary
    spans: list[Span]

    @property
    def duration_ms(self) -> float:
        return (self.summary.ended_at - self.summary.started_at).total_seconds() * 1000


def valid_trace_id(trace_id: str) -> str:
    """32 lowercase hex digits, not all zero (W3C trace context), or BAD_USER_INPUT."""
    value = trace_id.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value) or not value.strip("0"):
        raise DoorwardError(ErrorCode.BAD_USER_INPUT, "traceId must be 32 hex digits")
    return value


class TraceStore:
    def __init__(self, retention: timedelta, clock: Clock = utc_now) -> None:
        self.retention = retention
        self.clock = clock
        # Organisations' own (shorter) trace retention, as their retention policy says
        # (traceDays); the store-wide retention stays the ceiling.
        self.org_retention: dict[str, timedelta] = {}

    def set_org_retention(self, org_id: str, days: float) -> None:
        if not org_id or days <= 0:
            raise DoorwardError(ErrorCode.BAD_USER_INPUT, "an organisation and days > 0")
        self.org_retention[org_id] = timedelta(days=days)

    def horizon(self, org_id: str | None = None) -> datetime:
        """Oldest moment still kept for `org_id` (the store's horizon without one)."""
        kept = self.retention
        if org_id is not None and org_id in self.org_retention:
            kept = min(kept, self.org_retention[org_id])
        return self.clock() - kept

    async def ingest_spans(self, session: AsyncSession, records: Sequence[SpanRecord]) -> int:
        """Store spans not seen before; spans already past retention are dropped at the door.
        One statement: `session` may be a transaction or autocommit (the receiver's)."""
        horizon = (self.clock() - self.retention - _EPOCH) // timedelta(microseconds=1)
        fresh = [r for r in records if r.start_us >= horizon]
        return await TraceRepository(session).add_spans(fresh)

    async def ingest_metrics(self, session: AsyncSession, records: Sequence[MetricRecord]) -> int:
        return await TraceRepository(session).add_metric_points(records)

    async def trace(self, session: AsyncSession, org_id: str, trace_id: str) -> TraceView | None:
        """One trace of `org_id`; None when unknown, expired or another organisation's (the
        same answer, so ids of other organisations cannot be probed)."""
        repo = TraceRepository(session)
        summary = await repo.trace(org_id, valid_trace_id(trace_id))
        if summary is None or summary.ended_at < self.horizon(org_id):
            return None
        return TraceView(summary, await repo.spans_of(summary.trace_id))

    async def traces(
        self,
        session: AsyncSession,
        org_id: str,
        query: TraceQuery,
        first: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[TraceSummary]:
        if after is not None:
            after = (after[0], valid_trace_id(after[1]))
        if query.trace_ids is not None:
            query = replace(query, trace_ids=tuple(valid_trace_id(t) for t in query.trace_ids))
        horizon = self.horizon(org_id)
        if query.started_from is None or query.started_from < horizon:
            query = replace(query, started_from=horizon)
        return await TraceRepository(session).traces(org_id, query, first, after)

    async def prune(self, session: AsyncSession, batch: int = 5000) -> int:
        """One batch of deletions past retention; call until it returns 0."""
        return await TraceRepository(session).prune(self.clock() - self.retention, batch)

    # ---- organisations' own retention, persisted (issue 14) --------------------------------

    async def load_org_retention(self, session: AsyncSession) -> None:
        """The organisations' retention as the database keeps it (at start and before each
        prune pass, so what SetOrgRetention stored survives restarts)."""
        for org_id, days in (await TraceRepository(session).org_retentions()).items():
            self.org_retention[org_id] = timedelta(days=days)

    async def save_org_retention(self, session: AsyncSession, org_id: str, days: int) -> float:
        """Store an organisation's traceDays (workorders' purge sends its retention policy);
        the caller installs it with set_org_retention once committed. Returns the days the
        store actually keeps: never more than its own retention."""
        if not org_id or len(org_id) > 64 or org_id == CONFLICT_ORG:
            raise DoorwardError(ErrorCode.BAD_USER_INPUT, "org_id must be an organisation id")
        if not 1 <= days <= MAX_ORG_DAYS:
            raise DoorwardError(ErrorCode.BAD_USER_INPUT, f"days must be 1..{MAX_ORG_DAYS}")
        await TraceRepository(session).save_org_retention(org_id, days, self.clock())
        return min(self.retention, timedelta(days=days)) / timedelta(days=1)

    async def prune_orgs(self, session: AsyncSession, batch: int = 5000) -> int:
        """One batch per organisation with a shorter retention of its own; call until 0."""
        repo = TraceRepository(session)
        total = 0
        for org_id in sorted(self.org_retention):
            total += await repo.prune_org(org_id, self.horizon(org_id), batch)
        return total
