"""Audit's GraphQL subgraph (Federation v2).

Readers are AUDITOR and ADMIN of the caller's organisation (policy: audit.read,
audit.integrity.read, security.alert.read); everybody else gets FORBIDDEN, including through
`_entities` (WorkOrder.auditTrail, User.accessHistory): resolve_reference checks too (and
WorkOrder.resolve_references, which resolves a request's work orders at once). One
exception: every user may read their OWN User.accessHistory (audit.own_history.read), but not
the traces of its events (AuditEvent.trace needs audit.read).

Traces (`trace`, `traces`, `AuditEvent.trace`, `Trace.auditEvents`) come from the embedded trace
store's read API over mutual-TLS gRPC; each call carries the reader's own access token, and the
store checks role and organisation again on its side.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import strawberry
import strawberry.federation
from doorward.traces.v1 import traces_pb2
from strawberry.fastapi import GraphQLRouter
from strawberry.types import Info

from doorward_kit.auth import Principal
from doorward_kit.errors import bad_input, unavailable
from doorward_kit.graphql import (
    Edge,
    GatewayGate,
    PageInfo,
    SubgraphSchema,
    caller,
    connection_page,
    decode_cursor,
    decode_time_cursor,
    encode_cursor,
    encode_time_cursor,
    page_size,
    schema_extensions,
    subgraph_router,
)
from doorward_kit.policy import Action, Resource, authorize
from doorward_kit.selection import Selected
from services.audit.models import AuditEvent as EventRow
from services.audit.models import SecurityAlert as AlertRow
from services.audit.repository import (
    TRAIL_COLUMNS,
    TRAIL_KEY_COLUMNS,
    EventFilter,
    StoredDetails,
    TrailRow,
)
from services.audit.runtime import AuditRuntime
from services.audit.service import AuditService, ConsistencyProof, InclusionProof
from services.audit.signing import Checkpoint, public_key_pem
from services.audit.trace_store import TraceQuery, TraceStoreClient
from services.audit.verify import IntegrityReport

log = logging.getLogger(__name__)


def _runtime(info: Info) -> AuditRuntime:
    runtime: AuditRuntime = info.context.services
    return runtime


def _opt(value: str) -> str | None:
    return value or None


@strawberry.enum(name="AuditOutcome")
class AuditOutcome(enum.Enum):
    ALLOWED = "ALLOWED"
    DENIED = "DENIED"
    ERROR = "ERROR"


# A dict lookup: calling the enum by value costs more, 200 times per board.
_OUTCOMES = {outcome.value: outcome for outcome in AuditOutcome}


@strawberry.type
class AuditDetail:
    key: str
    value: str


def _details(values: dict[str, Any]) -> list[AuditDetail]:
    return [AuditDetail(key=k, value=str(v)) for k, v in sorted(values.items())]


@strawberry.federation.type(keys=["id"])
class User:
    id: strawberry.ID

    @strawberry.field(description="What this user did, newest 1000 events, oldest first.")
    async def access_history(self, info: Info) -> list[AuditEvent]:
        principal = await caller(info)
        runtime = _runtime(info)
        async with runtime.db.unit_of_work() as session:
            rows = await runtime.service.access_history(session, principal, str(self.id))
        return [AuditEvent.from_row(r) for r in rows]

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> User:
        principal = await caller(info)
        # Their own history for everybody; anyone else's for audit readers only.
        AuditService.authorize_history(principal, str(id))
        return cls(id=id)


@strawberry.federation.type(keys=["id"])
class WorkOrder:
    id: strawberry.ID
    # The trail read with the entity batch (resolve_references) when the operation selects it:
    # the events, or the error of their read (each entity's auditTrail raises it, as the
    # loader's batch did). None: not read yet (a WorkOrder reached through AuditEvent.workOrder).
    trail: strawberry.Private[list[AuditEvent] | Exception | None] = None

    @strawberry.field(description="Events about this work order, newest 1000, oldest first.")
    def audit_trail(self, info: Info) -> list[AuditEvent]:
        # Not a coroutine: an entity of a batch has its trail already, and a board's 20 of
        # them are completed in one loop. Anything else reads it through the loader (an
        # awaitable, which graphql-core awaits as it would an async resolver's).
        trail = self.trail
        if trail is None:
            return cast(list[AuditEvent], _trail_later(info, str(self.id)))
        if isinstance(trail, Exception):
            raise trail
        return trail

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> WorkOrder:
        principal = await caller(info)
        authorize(principal, Action.AUDIT_READ, Resource(org_id=principal.org_id))
        return cls(id=id)

    @classmethod
    async def resolve_references(
        cls, info: Info, representations: list[dict[str, str]]
    ) -> list[WorkOrder]:
        """The request's work orders at once (doorward_kit.entities): the same check as
        resolve_reference's, once (it is the same for every id: it raises for all of them),
        and, when the operation asks for auditTrail, every trail in one query."""
        principal = await caller(info)
        authorize(principal, Action.AUDIT_READ, Resource(org_id=principal.org_id))
        orders = [cls(id=strawberry.ID(r["id"])) for r in representations]
        selected = Selected.on(info, "WorkOrder")
        trail = selected.field("auditTrail") if selected is not None else None
        if trail is None:
            return orders
        # Only the columns of the event fields execution will resolve (the board: 2 of 16).
        columns = trail_columns(trail.names())
        ids = list(dict.fromkeys(str(o.id) for o in orders))
        runtime = _runtime(info)
        try:
            async with runtime.db.raw_reads() as raw:  # one query: no transaction needed
                trails = await runtime.service.work_order_trails(
                    raw, principal, ids, trail_maker(columns), columns
                )
        except Exception as error:  # each entity's auditTrail fails with it, in its place
            for order in orders:
                order.trail = error
            return orders
        for order in orders:
            order.trail = trails[str(order.id)]
        return orders


async def _trail_later(info: Info, work_order_id: str) -> list[AuditEvent]:
    """A trail asked for outside an entity batch: the request's work orders in one query
    still (a session per row exhausted PostgreSQL's connections under a few boards at once)."""
    principal = await caller(info)
    runtime = _runtime(info)

    async def batch(ids: list[str]) -> list[list[AuditEvent]]:
        async with runtime.db.raw_reads() as raw:  # one query: no transaction needed
            trails = await runtime.service.work_order_trails(
                raw, principal, ids, AuditEvent.from_trail
            )
        return [trails[i] for i in ids]

    trail: list[AuditEvent] = await info.context.loader("audit_trails", batch).load(work_order_id)
    return trail


@strawberry.type
class AuditEvent:
    id: strawberry.ID
    seq: int
    occurred_at: datetime
    actor_id: strawberry.Private[str]
    action: str
    outcome: AuditOutcome
    work_order_id: strawberry.Private[str]
    secret_ref_id: strawberry.ID | None
    target_type: str | None
    target_id: str | None
    trace_id: str | None
    source_ip: str | None
    service: str | None
    hash: str
    prev_hash: str
    raw_details: strawberry.Private[dict[str, Any]]

    @strawberry.field
    def details(self) -> list[AuditDetail]:
        # Built when asked for, not for every event read (a board's 200 never are).
        return _details(self.raw_details)

    @strawberry.field
    def actor(self) -> User | None:
        return User(id=strawberry.ID(self.actor_id)) if self.actor_id else None

    @strawberry.field
    def work_order(self) -> WorkOrder | None:
        return WorkOrder(id=strawberry.ID(self.work_order_id)) if self.work_order_id else None

    @strawberry.field(description="The request's trace (AUDITOR, ADMIN); null once expired.")
    async def trace(self, info: Info) -> Trace | None:
        principal = await caller(info)
        # An event reached through one's own accessHistory still needs audit.read here.
        AuditService.authorize_read(principal)
        if not self.trace_id:
            return None
        return await _load_trace(info, principal, self.trace_id)

    @classmethod
    def from_row(cls, row: EventRow | Any) -> AuditEvent:
        # An ORM event or a plain row of its columns (the trails).
        return cls(
            id=strawberry.ID(row.id),
            seq=row.seq,
            occurred_at=row.occurred_at,
            actor_id=row.actor_id,
            action=row.action,
            outcome=_OUTCOMES[row.outcome],
            work_order_id=row.work_order_id,
            secret_ref_id=strawberry.ID(row.secret_ref_id) if row.secret_ref_id else None,
            target_type=_opt(row.target_type),
            target_id=_opt(row.target_id),
            trace_id=_opt(row.trace_id),
            source_ip=_opt(row.source_ip),
            service=_opt(row.service),
            hash=row.hash,
            prev_hash=row.prev_hash,
            raw_details=row.details,
        )

    @classmethod
    def from_trail(cls, row: TrailRow) -> AuditEvent:
        """`from_row` of a trail row (TrailEvent's columns in order, details as text), for the
        200 events of a board: the same object, straight from the row (no TrailEvent first),
        its fields set directly. Through the dataclass' keyword __init__ (16 arguments) and the
        helpers above, building them was the largest part of audit's execution once its
        leaf fields were cheap (7 -> 2 us an event, then about 1 without the TrailEvent).
        tests/unit/audit/test_trail_events.py holds it equal to `from_row`."""
        (
            seq,
            id_,
            occurred_at,
            actor_id,
            action,
            outcome,
            work_order_id,
            secret_ref_id,
            target_type,
            target_id,
            trace_id,
            source_ip,
            service,
            details,
            prev_hash,
            hash_,
        ) = row
        event = _new_event(cls)
        event.__dict__ = {
            "id": id_,
            "seq": seq,
            "occurred_at": occurred_at,
            "actor_id": actor_id,
            "action": action,
            "outcome": _OUTCOMES[outcome],
            "work_order_id": work_order_id,
            "secret_ref_id": secret_ref_id or None,
            "target_type": target_type or None,
            "target_id": target_id or None,
            "trace_id": trace_id or None,
            "source_ip": source_ip or None,
            "service": service or None,
            "hash": hash_,
            "prev_hash": prev_hash,
            "raw_details": StoredDetails(details),
        }
        return event


_new_event = object.__new__

# The trail columns (repository.TrailEvent's) each field of AuditEvent reads; `seq` and
# `work_order_id` are always read (repository.TRAIL_KEY_COLUMNS). A field missing here (a new
# one) makes the trail read every column: nothing it resolves can find its value absent.
_TRAIL_FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "__typename": (),
    "id": ("id",),
    "seq": (),
    "occurredAt": ("occurred_at",),
    "actor": ("actor_id",),
    "action": ("action",),
    "outcome": ("outcome",),
    "workOrder": (),
    "secretRefId": ("secret_ref_id",),
    "targetType": ("target_type",),
    "targetId": ("target_id",),
    "traceId": ("trace_id",),
    "trace": ("trace_id",),
    "sourceIp": ("source_ip",),
    "service": ("service",),
    "hash": ("hash",),
    "prevHash": ("prev_hash",),
    "details": ("details",),
}
# Stored as '' when absent, shown as null (from_row's _opt).
_OPTIONAL_COLUMNS = frozenset(
    {"secret_ref_id", "target_type", "target_id", "trace_id", "source_ip", "service"}
)


def trail_columns(fields: Iterable[str]) -> tuple[str, ...]:
    """The trail columns that AuditEvent's `fields` (GraphQL names) read, in TrailEvent's
    order; every column when any of them is not known here."""
    needed = set(TRAIL_KEY_COLUMNS)
    for name in fields:
        columns = _TRAIL_FIELD_COLUMNS.get(name)
        if columns is None:
            return TRAIL_COLUMNS
        needed.update(columns)
    return tuple(c for c in TRAIL_COLUMNS if c in needed)


@functools.lru_cache(maxsize=64)
def trail_maker(columns: tuple[str, ...]) -> Callable[[TrailRow], AuditEvent]:
    """How an AuditEvent is made from a trail row of `columns`: from_trail for all of them;
    for fewer, an event with only the attributes those columns give, each as from_trail sets
    it (the fields selected need no others; tests/unit/audit/test_trail_events.py)."""
    if columns == TRAIL_COLUMNS:
        return AuditEvent.from_trail
    names = tuple("raw_details" if c == "details" else c for c in columns)
    optional = tuple(c for c in columns if c in _OPTIONAL_COLUMNS)
    details = "details" in columns

    def make(row: TrailRow) -> AuditEvent:
        # A row has exactly `columns` (trail_sql's text is made from them).
        values = dict(zip(names, row))  # noqa: B905 (strict= costs a third of this)
        values["outcome"] = _OUTCOMES[values["outcome"]]
        event = _new_event(AuditEvent)
        event.__dict__ = values
        return event

    def make_any(row: TrailRow) -> AuditEvent:
        values = dict(zip(names, row))  # noqa: B905 (as above)
        if "outcome" in values:
            values["outcome"] = _OUTCOMES[values["outcome"]]
        for name in optional:
            values[name] = values[name] or None
        if details:
            values["raw_details"] = StoredDetails(values["raw_details"])
        event = _new_event(AuditEvent)
        event.__dict__ = values
        return event

    # The board's shape (outcome, nothing to convert) without the checks; any other with them.
    return make if "outcome" in columns and not optional and not details else make_any


# ---- traces ------------------------------------------------------------------------------


@strawberry.enum(name="Decision")
class Decision(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@strawberry.enum(name="SpanStatus")
class SpanStatus(enum.Enum):
    UNSET = "UNSET"
    OK = "OK"
    ERROR = "ERROR"


@strawberry.type
class SpanAttribute:
    key: str
    value: str


@strawberry.type
class SpanEvent:
    name: str
    at: datetime
    attributes: list[SpanAttribute]


def _when(stamp: Any) -> datetime:
    moment: datetime = stamp.ToDatetime(tzinfo=UTC)
    return moment


def _span_attributes(items: Any) -> list[SpanAttribute]:
    return [SpanAttribute(key=a.key, value=a.value) for a in items]


@strawberry.type
class Span:
    span_id: strawberry.ID
    parent_span_id: strawberry.ID | None
    service: str
    name: str
    kind: str
    started_at: datetime
    duration_ms: float
    status: SpanStatus
    attributes: list[SpanAttribute]
    events: list[SpanEvent]

    @classmethod
    def from_message(cls, span: traces_pb2.Span) -> Span:
        return cls(
            span_id=strawberry.ID(span.span_id),
            parent_span_id=strawberry.ID(span.parent_span_id) if span.parent_span_id else None,
            service=span.service,
            name=span.name,
            kind=span.kind,
            started_at=_when(span.started_at),
            duration_ms=span.duration_us / 1000,
            status=SpanStatus(span.status)
            if span.status in SpanStatus.__members__
            else (SpanStatus.UNSET),
            attributes=_span_attributes(span.attributes),
            events=[
                SpanEvent(name=e.name, at=_when(e.at), attributes=_span_attributes(e.attributes))
                for e in span.events
            ],
        )


@strawberry.type
class Trace:
    trace_id: strawberry.ID
    started_at: datetime
    duration_ms: float
    services: list[str]
    # Spans of a trace fetched whole; a listed trace fetches them only when asked for.
    loaded_spans: strawberry.Private[list[Span] | None]

    @strawberry.field
    async def spans(self, info: Info) -> list[Span]:
        if self.loaded_spans is not None:
            return self.loaded_spans
        principal = await caller(info)
        AuditService.authorize_read(principal)
        whole = await _load_trace(info, principal, str(self.trace_id))
        return whole.loaded_spans or [] if whole is not None else []

    @strawberry.field(description="The organisation's audit events of this trace, oldest first.")
    async def audit_events(self, info: Info) -> list[AuditEvent]:
        principal = await caller(info)
        runtime = _runtime(info)
        async with runtime.db.unit_of_work() as session:
            rows = await runtime.service.events_of_trace(session, principal, str(self.trace_id))
        return [AuditEvent.from_row(r) for r in rows]

    @classmethod
    def from_summary(
        cls, summary: traces_pb2.TraceSummary, spans: list[Span] | None = None
    ) -> Trace:
        started, ended = _when(summary.started_at), _when(summary.ended_at)
        return cls(
            trace_id=strawberry.ID(summary.trace_id),
            started_at=started,
            duration_ms=(ended - started).total_seconds() * 1000,
            services=list(summary.services),
            loaded_spans=spans,
        )


@strawberry.type
class TraceConnection:
    edges: list[Edge[Trace]]
    page_info: PageInfo


@strawberry.input
class TraceFilter:
    decision: Decision | None = None
    reason: str | None = None
    work_order_id: strawberry.ID | None = None
    secret_ref_id: strawberry.ID | None = None
    actor_id: strawberry.ID | None = None
    service: str | None = None
    from_: datetime | None = strawberry.field(name="from", default=None)
    to: datetime | None = None


def _trace_store(info: Info) -> TraceStoreClient:
    traces = _runtime(info).traces
    if traces is None:
        raise unavailable("no embedded trace store here: spans go to the external collector")
    return traces


def _bearer(info: Info, principal: Principal) -> str:
    return principal.token or info.context.raw_token or ""


async def _load_trace(info: Info, principal: Principal, trace_id: str) -> Trace | None:
    """One trace, fetched once per request however many fields ask (concurrently per batch)."""
    store, bearer = _trace_store(info), _bearer(info, principal)

    async def load(ids: list[str]) -> list[Trace | None]:
        found = await asyncio.gather(*(store.trace(i, bearer=bearer) for i in ids))
        return [
            Trace.from_summary(t.summary, [Span.from_message(s) for s in t.spans])
            if t is not None
            else None
            for t in found
        ]

    loaded: Trace | None = await info.context.loader("trace", load).load(trace_id)
    return loaded


async def _query_of(info: Info, principal: Principal, f: TraceFilter | None) -> TraceQuery:
    if f is None:
        return TraceQuery()
    for moment in (f.from_, f.to):
        if moment is not None and moment.tzinfo is None:
            raise bad_input("from and to need a time zone offset")
    trace_ids: list[str] | None = None
    if f.actor_id is not None:
        runtime = _runtime(info)
        async with runtime.db.unit_of_work() as session:
            trace_ids = await runtime.service.trace_ids_of_actor(
                session, principal, str(f.actor_id), f.from_, f.to
            )
    return TraceQuery(
        decision=f.decision.value if f.decision is not None else None,
        reason=f.reason,
        work_order_id=str(f.work_order_id) if f.work_order_id is not None else None,
        secret_ref_id=str(f.secret_ref_id) if f.secret_ref_id is not None else None,
        service=f.service,
        started_from=f.from_,
        started_to=f.to,
        trace_ids=trace_ids,
    )


@strawberry.type
class AuditEventConnection:
    edges: list[Edge[AuditEvent]]
    page_info: PageInfo


@strawberry.type
class SignedCheckpoint:
    tree_size: int
    root_hash: str
    signature: str = strawberry.field(description="Ed25519 signature, base64")
    key_id: str
    signed_at: datetime
    public_key_pem: str | None = None

    @classmethod
    def from_checkpoint(cls, cp: Checkpoint, public_pem: str | None) -> SignedCheckpoint:
        return cls(
            tree_size=cp.tree_size,
            root_hash=cp.root_hash,
            signature=cp.signature,
            key_id=cp.key_id,
            signed_at=cp.signed_at,
            public_key_pem=public_pem,
        )


@strawberry.type
class AuditIntegrityReport:
    ok: bool
    checked_events: int
    first_broken_seq: int | None
    head_seq: int
    head_hash: str | None
    checkpoint: SignedCheckpoint | None
    problems: list[str]


@strawberry.type
class AuditInclusionProof:
    event_id: strawberry.ID
    seq: int
    event_hash: str
    leaf_index: int
    tree_size: int
    root_hash: str
    path: list[str]
    checkpoint: SignedCheckpoint | None


@strawberry.type
class AuditConsistencyProof:
    from_tree_size: int
    to_tree_size: int
    from_root_hash: str
    to_root_hash: str
    path: list[str]


@strawberry.type
class SecurityAlert:
    id: strawberry.ID
    rule: str
    occurred_at: datetime
    raised_at: datetime
    actor_id: strawberry.Private[str]
    trigger_event_id: strawberry.ID | None
    alert_event_id: strawberry.ID
    details: list[AuditDetail]

    @strawberry.field
    def actor(self) -> User | None:
        return User(id=strawberry.ID(self.actor_id)) if self.actor_id else None

    @classmethod
    def from_row(cls, row: AlertRow) -> SecurityAlert:
        return cls(
            id=strawberry.ID(row.id),
            rule=row.rule,
            occurred_at=row.occurred_at,
            raised_at=row.raised_at,
            actor_id=row.actor_id,
            trigger_event_id=strawberry.ID(row.trigger_event_id) if row.trigger_event_id else None,
            alert_event_id=strawberry.ID(row.alert_event_id),
            details=_details(row.details),
        )


@strawberry.type
class SecurityAlertConnection:
    edges: list[Edge[SecurityAlert]]
    page_info: PageInfo


def _public_pem(runtime: AuditRuntime) -> str | None:
    key = runtime.service.public_key
    return public_key_pem(key) if key is not None else None


def _report(report: IntegrityReport, runtime: AuditRuntime) -> AuditIntegrityReport:
    cp = report.checkpoint
    return AuditIntegrityReport(
        ok=report.ok,
        checked_events=report.checked_events,
        first_broken_seq=report.first_broken_seq,
        head_seq=report.head_seq,
        head_hash=report.head_hash or None,
        checkpoint=SignedCheckpoint.from_checkpoint(cp, _public_pem(runtime)) if cp else None,
        problems=report.problems,
    )


def _after_seq(after: str | None) -> int | None:
    if after is None:
        return None
    (value,) = decode_cursor(after, 1)
    try:
        return int(value)
    except ValueError:
        raise bad_input("after: not a cursor from this API") from None


@strawberry.type
class Query:
    @strawberry.field(description="The organisation's trail, newest first (AUDITOR, ADMIN).")
    async def audit_events(
        self,
        info: Info,
        actor_id: strawberry.ID | None = None,
        work_order_id: strawberry.ID | None = None,
        secret_ref_id: strawberry.ID | None = None,
        action: str | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> AuditEventConnection:
        principal = await caller(info)
        size = page_size(first)
        before = _after_seq(after)
        for moment in (from_, to):
            if moment is not None and moment.tzinfo is None:
                raise bad_input("from and to need a time zone offset")
        runtime = _runtime(info)
        event_filter = EventFilter(
            actor_id=str(actor_id) if actor_id is not None else None,
            work_order_id=str(work_order_id) if work_order_id is not None else None,
            secret_ref_id=str(secret_ref_id) if secret_ref_id is not None else None,
            action=action,
            occurred_from=from_,
            occurred_to=to,
        )
        async with runtime.db.unit_of_work() as session:
            rows = await runtime.service.list_events(
                session, principal, event_filter, before_seq=before, limit=size + 1
            )
        edges, page_info = connection_page(
            rows, size, lambda r: encode_cursor(str(r.seq)), AuditEvent.from_row
        )
        return AuditEventConnection(edges=edges, page_info=page_info)

    @strawberry.field(
        description="One trace of the organisation (AUDITOR, ADMIN); null when unknown, "
        "expired or another organisation's."
    )
    async def trace(self, info: Info, trace_id: strawberry.ID) -> Trace | None:
        principal = await caller(info)
        AuditService.authorize_read(principal)
        return await _load_trace(info, principal, str(trace_id))

    @strawberry.field(description="The organisation's traces, newest first (AUDITOR, ADMIN).")
    async def traces(
        self,
        info: Info,
        filter_: Annotated[TraceFilter | None, strawberry.argument(name="filter")] = None,
        first: int | None = None,
        after: str | None = None,
    ) -> TraceConnection:
        principal = await caller(info)
        AuditService.authorize_read(principal)
        size = page_size(first)
        position = decode_time_cursor(after)
        query = await _query_of(info, principal, filter_)
        rows = await _trace_store(info).traces(
            query, size + 1, position, bearer=_bearer(info, principal)
        )
        edges, page_info = connection_page(
            rows,
            size,
            lambda r: encode_time_cursor(_when(r.started_at), r.trace_id),
            Trace.from_summary,
        )
        return TraceConnection(edges=edges, page_info=page_info)

    @strawberry.field(description="Verifies the organisation's whole chain and checkpoints.")
    async def audit_integrity(self, info: Info) -> AuditIntegrityReport:
        principal = await caller(info)
        runtime = _runtime(info)
        async with runtime.db.unit_of_work() as session:
            report = await runtime.service.integrity(session, principal)
        return _report(report, runtime)

    @strawberry.field(description="Alerts raised by the rules over the trail, newest first.")
    async def security_alerts(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> SecurityAlertConnection:
        principal = await caller(info)
        size = page_size(first)
        before = decode_time_cursor(after)
        runtime = _runtime(info)
        async with runtime.db.unit_of_work() as session:
            rows = await runtime.service.alerts(session, principal, before=before, limit=size + 1)
        edges, page_info = connection_page(
            rows,
            size,
            lambda r: encode_time_cursor(r.raised_at, r.id),
            SecurityAlert.from_row,
        )
        return SecurityAlertConnection(edges=edges, page_info=page_info)

    @strawberry.field(
        description="Merkle inclusion proof of one event (default: latest checkpoint)."
    )
    async def audit_inclusion_proof(
        self, info: Info, event_id: strawberry.ID, tree_size: int | None = None
    ) -> AuditInclusionProof:
        principal = await caller(info)
        runtime = _runtime(info)
        async with runtime.db.unit_of_work() as session:
            proof: InclusionProof = await runtime.service.inclusion_proof(
                session, principal, str(event_id), tree_size
            )
        cp = proof.checkpoint
        return AuditInclusionProof(
            event_id=strawberry.ID(proof.event_id),
            seq=proof.seq,
            event_hash=proof.event_hash,
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            root_hash=proof.root_hash,
            path=proof.path,
            checkpoint=SignedCheckpoint.from_checkpoint(cp, _public_pem(runtime)) if cp else None,
        )

    @strawberry.field(description="Merkle consistency proof between two tree sizes.")
    async def audit_consistency_proof(
        self, info: Info, from_tree_size: int, to_tree_size: int
    ) -> AuditConsistencyProof:
        principal = await caller(info)
        runtime = _runtime(info)
        async with runtime.db.unit_of_work() as session:
            proof: ConsistencyProof = await runtime.service.consistency_proof(
                session, principal, from_tree_size, to_tree_size
            )
        return AuditConsistencyProof(
            from_tree_size=proof.old_size,
            to_tree_size=proof.new_size,
            from_root_hash=proof.old_root,
            to_root_hash=proof.new_root,
            path=proof.path,
        )


def build_schema() -> strawberry.federation.Schema:
    return SubgraphSchema(query=Query, types=[User, WorkOrder], extensions=schema_extensions())


def build_router(
    runtime: AuditRuntime, *, gate: GatewayGate, development: bool = False
) -> GraphQLRouter[Any, Any]:
    return subgraph_router(
        build_schema(),
        verifier=runtime.verifier,
        services=runtime,
        gate=gate,
        development=development,
    )
