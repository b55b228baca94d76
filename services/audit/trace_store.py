"""Audit's client of the trace store's read API (doorward.traces.v1, mutual-TLS gRPC).

Every call acts for the auditor or admin asking the graph and carries their access token: the
store verifies it itself and answers only their organisation. An unknown, expired or foreign
trace comes back as None (the store cannot tell them apart for us either).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from doorward.traces.v1 import traces_pb2, traces_pb2_grpc

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import ServiceChannel

DECISIONS = {"ALLOW": traces_pb2.ALLOW, "DENY": traces_pb2.DENY}


@dataclass(frozen=True)
class TraceQuery:
    decision: str | None = None  # ALLOW | DENY
    reason: str | None = None
    work_order_id: str | None = None
    secret_ref_id: str | None = None
    service: str | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
    trace_ids: Sequence[str] | None = None  # None: any trace


class TraceStoreClient:
    def __init__(self, channel: ServiceChannel) -> None:
        self._channel = channel
        self._stub = traces_pb2_grpc.TracesStub(channel.channel)

    async def trace(self, trace_id: str, *, bearer: str) -> traces_pb2.Trace | None:
        try:
            answer = await self._channel.call(
                self._stub.GetTrace,
                traces_pb2.GetTraceRequest(trace_id=trace_id),
                bearer_token=bearer,
                what="the trace store",
            )
        except DoorwardError as error:
            if error.code is ErrorCode.NOT_FOUND:
                return None
            raise
        trace: traces_pb2.Trace = answer.trace
        return trace

    async def traces(
        self,
        query: TraceQuery,
        first: int,
        after: tuple[datetime, str] | None,
        *,
        bearer: str,
    ) -> list[traces_pb2.TraceSummary]:
        request = traces_pb2.ListTracesRequest(
            decision=DECISIONS.get(query.decision or "", traces_pb2.DECISION_UNSPECIFIED),
            reason=query.reason or "",
            work_order_id=query.work_order_id or "",
            secret_ref_id=query.secret_ref_id or "",
            service=query.service or "",
            restrict_trace_ids=query.trace_ids is not None,
            trace_ids=list(query.trace_ids or ()),
            first=first,
        )
        if query.started_from is not None:
            request.started_from.FromDatetime(query.started_from.astimezone(UTC))
        if query.started_to is not None:
            request.started_to.FromDatetime(query.started_to.astimezone(UTC))
        if after is not None:
            request.after_started_at.FromDatetime(after[0].astimezone(UTC))
            request.after_trace_id = after[1]
        answer = await self._channel.call(
            self._stub.ListTraces, request, bearer_token=bearer, what="the trace store"
        )
        return list(answer.traces)

    async def close(self) -> None:
        await self._channel.close()
