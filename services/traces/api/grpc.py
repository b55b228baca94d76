"""The trace store's read API (doorward.traces.v1.Traces) for the audit service, and the
organisations' trace retention for workorders' purge (SetOrgRetention).

Two locks on every call: the kit's interceptor lets only audit's certificate in (ALLOWED_CALLERS),
and the call must carry the access token of the AUDITOR or ADMIN it acts for, verified here as
at the edge; the organisation comes from that token, never from the request. So a caller holding
audit's certificate still reads only the organisation of a real auditor's live session.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc
from doorward.traces.v1 import traces_pb2, traces_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from doorward_kit.acting import acting_user
from doorward_kit.auth import Principal, Role, TokenVerifier
from doorward_kit.db import Database
from doorward_kit.errors import bad_input, not_found
from doorward_kit.grpc import GrpcServer, allow_list, grpc_errors
from doorward_kit.policy import Action, Resource, authorize
from services.traces.models import Span
from services.traces.repository import TraceQuery, TraceSummary
from services.traces.service import MAX_PAGE, MAX_TRACE_IDS, TraceStore, TraceView

ALLOWED_CALLERS = allow_list(
    traces_pb2.DESCRIPTOR.services_by_name["Traces"],
    {
        "GetTrace": {"audit"},
        "ListTraces": {"audit"},
        # The retention purge runs in workorders (it holds the organisations' policies).
        "SetOrgRetention": {"workorders"},
    },
)

_DECISIONS = {traces_pb2.ALLOW: "allow", traces_pb2.DENY: "deny"}


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _time(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _attributes(values: dict[str, Any]) -> list[traces_pb2.Attribute]:
    return [traces_pb2.Attribute(key=k, value=_text(v)) for k, v in sorted(values.items())]


def summary_message(summary: TraceSummary) -> traces_pb2.TraceSummary:
    return traces_pb2.TraceSummary(
        trace_id=summary.trace_id,
        started_at=_ts(summary.started_at),
        ended_at=_ts(summary.ended_at),
        services=summary.services,
        span_count=summary.span_count,
    )


def span_message(span: Span) -> traces_pb2.Span:
    events = []
    for event in span.events or []:
        at = Timestamp()
        at.FromDatetime(datetime.fromisoformat(event["at"]).astimezone(UTC))
        events.append(
            traces_pb2.SpanEvent(
                name=event["name"], at=at, attributes=_attributes(event.get("attributes") or {})
            )
        )
    return traces_pb2.Span(
        span_id=span.span_id,
        parent_span_id=span.parent_span_id or "",
        service=span.service,
        name=span.name,
        kind=span.kind,
        started_at=_ts(span.started_at),
        duration_us=span.duration_us,
        status=span.status,
        attributes=_attributes(span.attributes or {}),
        events=events,
    )


def trace_message(view: TraceView) -> traces_pb2.Trace:
    return traces_pb2.Trace(
        summary=summary_message(view.summary), spans=[span_message(s) for s in view.spans]
    )


def query_of(request: traces_pb2.ListTracesRequest) -> TraceQuery:
    if request.restrict_trace_ids and len(request.trace_ids) > MAX_TRACE_IDS:
        raise bad_input(f"at most {MAX_TRACE_IDS} trace ids")
    return TraceQuery(
        decision=_DECISIONS.get(request.decision),
        reason=request.reason or None,
        work_order_id=request.work_order_id or None,
        secret_ref_id=request.secret_ref_id or None,
        service=request.service or None,
        started_from=_time(request.started_from, request.HasField("started_from")),
        started_to=_time(request.started_to, request.HasField("started_to")),
        trace_ids=tuple(request.trace_ids) if request.restrict_trace_ids else None,
    )


class TracesServicer(traces_pb2_grpc.TracesServicer):
    def __init__(self, db: Database, store: TraceStore, verifier: TokenVerifier) -> None:
        self._db = db
        self._store = store
        self._verifier = verifier

    async def _reader(self, context: grpc.aio.ServicerContext) -> Principal:
        principal = await acting_user(context, self._verifier, Role.AUDITOR, Role.ADMIN)
        authorize(principal, Action.AUDIT_READ, Resource(org_id=principal.org_id))
        return principal

    @grpc_errors
    async def GetTrace(
        self, request: traces_pb2.GetTraceRequest, context: grpc.aio.ServicerContext
    ) -> traces_pb2.GetTraceResponse:
        principal = await self._reader(context)
        async with self._db.unit_of_work() as session:
            view = await self._store.trace(session, principal.org_id, request.trace_id)
        if view is None:
            raise not_found("no such trace")
        return traces_pb2.GetTraceResponse(trace=trace_message(view))

    @grpc_errors
    async def ListTraces(
        self, request: traces_pb2.ListTracesRequest, context: grpc.aio.ServicerContext
    ) -> traces_pb2.ListTracesResponse:
        principal = await self._reader(context)
        if not 1 <= request.first <= MAX_PAGE:
            raise bad_input(f"first must be 1 to {MAX_PAGE}")
        after = None
        if request.after_trace_id:
            after = (request.after_started_at.ToDatetime(tzinfo=UTC), request.after_trace_id)
        async with self._db.unit_of_work() as session:
            rows = await self._store.traces(
                session, principal.org_id, query_of(request), request.first, after
            )
        return traces_pb2.ListTracesResponse(traces=[summary_message(r) for r in rows])

    @grpc_errors
    async def SetOrgRetention(
        self, request: traces_pb2.SetOrgRetentionRequest, context: grpc.aio.ServicerContext
    ) -> traces_pb2.SetOrgRetentionResponse:
        # No user here: the allow-list admits workorders' certificate only, and a policy can
        # only shorten what the store keeps (never past DOORWARD_TRACES_RETENTION_DAYS).
        async with self._db.unit_of_work() as session:
            effective = await self._store.save_org_retention(session, request.org_id, request.days)
        self._store.set_org_retention(request.org_id, request.days)
        return traces_pb2.SetOrgRetentionResponse(effective_days=effective)


def add_to_server(
    server: GrpcServer, db: Database, store: TraceStore, verifier: TokenVerifier
) -> None:
    traces_pb2_grpc.add_TracesServicer_to_server(TracesServicer(db, store, verifier), server.server)
    server.allow(ALLOWED_CALLERS)
