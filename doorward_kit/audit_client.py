"""Reliable audit client: every service writes audit events through here.

Two paths:
- Outbox (the usual one): `record_event(session, AuditOutbox, AuditRecord(...))` adds a row in the
  same transaction as the change it describes, so an event exists exactly when the change does.
  `OutboxSender(...).run()` (a background task) delivers pending rows to the audit service's
  gRPC AppendEvents and deletes them in the same transaction once audit has committed them.
  Audit is idempotent by event id, so a crash between "audit committed" and "row deleted" only
  causes a harmless re-send.
- Synchronous, fail-closed: `AuditClient(channel).append([...])` for actions that must not happen
  unless the trail has them (a secret reveal). Any failure raises DoorwardError(UNAVAILABLE).

Events carry pseudonymous ids only. `details` is an allow-listed map; values that look like an
email address or a phone number are refused, so personal data cannot slip into the trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from opentelemetry import trace
from opentelemetry.context import Context
from sqlalchemy import (
    DateTime,
    Integer,
    LargeBinary,
    String,
    event,
    func,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from doorward_kit.db import Database, RawReader
from doorward_kit.decisions import note_audit_event
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import ServiceChannel
from doorward_kit.metrics import AUDIT_WRITE_FAILURES
from doorward_kit.net import canonical_ip
from doorward_kit.telemetry import current_trace_id

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

# ---- the record ---------------------------------------------------------------------------

# Keys a producer may put in `details`. Every value must be an id, an enum or a small number:
# names, emails, phones, addresses, free text, secret values and tokens never go here.
# Need another key? Ask the audit owner to add it (it is reviewed for personal data).
ALLOWED_DETAIL_KEYS: frozenset[str] = frozenset(
    {
        # why / how
        "reason",
        "rule",
        "code",
        "error_code",
        "method",
        "result",
        "scope",
        "mode",
        "channel",
        "service",
        # state changes (enums)
        "status",
        "previous_status",
        "new_status",
        "kind",
        "priority",
        "role",
        "roles",
        "previous_roles",
        "field",
        "fields",
        "mfa",
        # pseudonymous ids
        "region_id",
        "region_ids",
        "customer_id",
        "site_id",
        "user_id",
        "assignee_id",
        "previous_assignee_id",
        "grant_id",
        "session_id",
        "upload_id",
        "key_id",
        "export_id",
        "alert_id",
        "event_id",
        "request_id",
        "secret_version",
        "version",
        # numbers and times
        "count",
        "threshold",
        "window_seconds",
        "ttl_seconds",
        "attempts",
        "lead_minutes",
        "grace_minutes",
        "expires_at",
        "window_start",
        "window_end",
        "first_seq",
        "last_seq",
    }
)

MAX_DETAILS = 32
MAX_DETAIL_VALUE_LENGTH = 256
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
# A run of digits with phone-ish separators, not part of a longer token (a hex id or a hash);
# judged by how many digits it holds.
_PHONE = re.compile(r"(?<![0-9A-Za-z])\+?\(?\d[\d\s().\-/]{5,}\d(?![0-9A-Za-z])")
_MIN_PHONE_DIGITS = 7


class AuditDetailsError(ValueError):
    """A producer tried to put something into an audit event that must not be there."""


class Outcome(enum.StrEnum):
    ALLOWED = "ALLOWED"
    DENIED = "DENIED"
    ERROR = "ERROR"


_OUTCOME_TO_PROTO = {
    Outcome.ALLOWED: audit_pb2.ALLOWED,
    Outcome.DENIED: audit_pb2.DENIED,
    Outcome.ERROR: audit_pb2.ERROR,
}
_OUTCOME_FROM_PROTO = {v: k for k, v in _OUTCOME_TO_PROTO.items()}


_UUID_TEXT = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID = re.compile(f"^{_UUID_TEXT}$")
_UUID_ANYWHERE = re.compile(_UUID_TEXT)


def _is_uuid(value: str) -> bool:
    return _UUID.match(value) is not None


def _is_timestamp(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def looks_personal(value: str) -> bool:
    """True when a details value looks like an email address or a phone number."""
    if _is_uuid(value):
        return False
    # An email needs an @, a phone number at least _MIN_PHONE_DIGITS digits: without either
    # nothing below can match. Most values are enums and types ("address", "Customer", ""),
    # checked on every audit event (a board writes one per customer read), and the full
    # checks cost them a failed timestamp parse and three regular expressions.
    if "@" not in value and sum(map(str.isdigit, value)) < _MIN_PHONE_DIGITS:
        return False
    return _looks_personal_in_full(value)


def _looks_personal_in_full(value: str) -> bool:
    """The checks themselves, after the shortcut (and a UUID) ruled nothing out."""
    if _is_timestamp(value):
        return False
    if _EMAIL.search(value):
        return True
    # A list of ids ("id1,id2") is fine: only what is left around them may be a phone number.
    for match in _PHONE.finditer(_UUID_ANYWHERE.sub(" ", value)):
        if sum(ch.isdigit() for ch in match.group()) >= _MIN_PHONE_DIGITS:
            return True
    return False


def _detail_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, enum.Enum):
        text = str(value.value)
    elif isinstance(value, int | str):
        text = str(value)
    else:
        raise AuditDetailsError(f"audit details: {key} must be a string, number or enum")
    if len(text) > MAX_DETAIL_VALUE_LENGTH:
        raise AuditDetailsError(f"audit details: {key} is too long")
    if looks_personal(text):
        # Never echo the value: it may be the very personal data we refuse.
        raise AuditDetailsError(f"audit details: {key} looks like personal data")
    return text


def clean_details(details: Mapping[str, Any]) -> dict[str, str]:
    """Validate a details map against the allow-list; returns it with string values."""
    if len(details) > MAX_DETAILS:
        raise AuditDetailsError(f"audit details: at most {MAX_DETAILS} keys")
    clean: dict[str, str] = {}
    for key, value in details.items():
        if key not in ALLOWED_DETAIL_KEYS:
            raise AuditDetailsError(f"audit details: key {key!r} is not allowed")
        clean[key] = _detail_value(key, value)
    return clean


def clean_ip(value: str) -> str:
    """An IP address or ''; anything else (a header someone forged) is dropped
    (doorward_kit.net.canonical_ip: remembered, so a board's events parse their one client
    address once)."""
    return canonical_ip(value)


@functools.lru_cache(maxsize=512)
def _is_action(value: str) -> bool:
    """Whether `value` is a dotted lower-case action; remembered (pure), as producers write a
    few fixed actions over and over."""
    return _ACTION.match(value) is not None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuditRecord:
    """One audit event as a producer writes it. Ids only; see ALLOWED_DETAIL_KEYS."""

    org_id: str
    actor_id: str
    action: str
    outcome: Outcome
    target_type: str = ""
    target_id: str = ""
    work_order_id: str = ""
    secret_ref_id: str = ""
    source_ip: str = ""
    details: dict[str, str] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=_utcnow)
    trace_id: str = field(default_factory=current_trace_id)

    def __post_init__(self) -> None:
        if not self.org_id:
            raise AuditDetailsError("audit event: org_id is required")
        if not _is_action(self.action or ""):
            raise AuditDetailsError("audit event: action must be dotted lower case, e.g. a.b")
        self.outcome = Outcome(self.outcome)
        if not _is_uuid(self.id):
            raise AuditDetailsError("audit event: id must be a UUID")
        if self.occurred_at.tzinfo is None:
            raise AuditDetailsError("audit event: occurred_at must carry a time zone")
        self.occurred_at = self.occurred_at.astimezone(UTC)
        self.details = clean_details(self.details)
        self.source_ip = clean_ip(self.source_ip)
        for name in ("actor_id", "target_type", "target_id", "work_order_id", "secret_ref_id"):
            value = getattr(self, name) or ""
            if len(value) > 128 or looks_personal(value):
                raise AuditDetailsError(f"audit event: {name} must be a pseudonymous id")
            setattr(self, name, value)

    def to_proto(self, service: str = "") -> audit_pb2.AuditEvent:
        message = audit_pb2.AuditEvent(
            id=self.id,
            org_id=self.org_id,
            actor_id=self.actor_id,
            action=self.action,
            outcome=_OUTCOME_TO_PROTO[self.outcome],
            work_order_id=self.work_order_id,
            secret_ref_id=self.secret_ref_id,
            target_type=self.target_type,
            target_id=self.target_id,
            trace_id=self.trace_id,
            source_ip=self.source_ip,
            details=self.details,
            service=service,
        )
        message.occurred_at.FromDatetime(self.occurred_at)
        return message

    @classmethod
    def from_proto(cls, message: audit_pb2.AuditEvent) -> AuditRecord:
        """Parse (and re-validate) an event received over gRPC."""
        if message.outcome not in _OUTCOME_FROM_PROTO:
            raise AuditDetailsError("audit event: outcome is missing")
        occurred = (
            message.occurred_at.ToDatetime(tzinfo=UTC)
            if message.HasField("occurred_at")
            else _utcnow()
        )
        return cls(
            org_id=message.org_id,
            actor_id=message.actor_id,
            action=message.action,
            outcome=_OUTCOME_FROM_PROTO[message.outcome],
            target_type=message.target_type,
            target_id=message.target_id,
            work_order_id=message.work_order_id,
            secret_ref_id=message.secret_ref_id,
            source_ip=message.source_ip,
            details=dict(message.details),
            id=message.id,
            occurred_at=occurred,
            trace_id=message.trace_id,
        )


# ---- the outbox ---------------------------------------------------------------------------


class AuditOutboxMixin:
    """Columns of a service's audit outbox. In the service's models.py:

        class AuditOutbox(AuditOutboxMixin, Base):
            __tablename__ = "audit_outbox"

    Rows are deleted once audit has committed them, so the table holds only pending events.
    """

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # A serialized doorward.audit.v1.AuditEvent (without `service`; the sender sets it).
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # The sender picks rows whose time has come, oldest first: this index serves that query.
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    )


# Senders in this process wake as soon as a transaction holding new events commits.
_wakers: dict[str, set[asyncio.Event]] = {}


def _wake(table: str) -> None:
    for waker in list(_wakers.get(table, ())):
        waker.set()


def _wake_after_commit(session: AsyncSession, table: str) -> None:
    tables: set[str] = session.info.setdefault("doorward_audit_tables", set())
    if table in tables:
        return
    tables.add(table)

    def after_commit(*_: Any) -> None:
        pending: set[str] = session.info.pop("doorward_audit_tables", set())
        for name in pending:
            _wake(name)

    def after_rollback(*_: Any) -> None:
        session.info.pop("doorward_audit_tables", None)

    if len(tables) == 1:
        event.listen(session.sync_session, "after_commit", after_commit, once=True)
        event.listen(session.sync_session, "after_soft_rollback", after_rollback, once=True)


def producer_span_id(trace_id: str) -> str:
    """The current span's id when it belongs to `trace_id` (the event's trace), else ''."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or format(context.trace_id, "032x") != trace_id:
        return ""
    return format(context.span_id, "016x")


def _outbox_payload(record: AuditRecord) -> bytes:
    note_audit_event(record.id, record.outcome)
    message = record.to_proto()
    message.producer_span_id = producer_span_id(record.trace_id)
    return message.SerializeToString()


def _outbox_insert(table: str) -> str:
    # next_attempt_at and created_at are left to the columns' server defaults: the database's
    # clock, like the sender's query. Arrays as text[]/bytea[]: built-in codecs, no catalogue
    # lookup (doorward_kit.db). One text per table, so each connection prepares it once.
    return (
        f"INSERT INTO {table} (id, payload, attempts) "  # noqa: S608 (a model's table name)
        "SELECT id, payload, 0 FROM unnest($1::text[], $2::bytea[]) AS e(id, payload)"
    )


class OutboxBatch:
    """The audit events of one request's reads, written to the outbox in one raw INSERT
    (`write`) by whoever owns the request (workorders' request unit: after execution, before
    the answer leaves). A session's flush did the same INSERT through the ORM unit of work,
    which cost workorders several times what PostgreSQL spent on it."""

    __slots__ = ("_ids", "_insert", "_payloads", "_table")

    def __init__(self, model: type[Any]) -> None:
        self._table: str = model.__tablename__
        self._insert = _outbox_insert(self._table)
        self._ids: list[str] = []
        self._payloads: list[bytes] = []

    def add(self, record: AuditRecord) -> None:
        self._ids.append(record.id)
        self._payloads.append(_outbox_payload(record))

    def __len__(self) -> int:
        return len(self._ids)

    def drop(self) -> None:
        """Forget the events (the request failed: nothing it read leaves, nothing is owed)."""
        self._ids.clear()
        self._payloads.clear()

    async def write(self, raw: RawReader) -> None:
        """All events in one INSERT on `raw`, a connection outside any transaction (raw_reads:
        the statement commits at once), then wake this process's senders. Events written
        stay written; a second write sends only what was added since."""
        if not self._ids:
            return
        ids, payloads = self._ids, self._payloads
        self._ids, self._payloads = [], []
        await raw.execute(self._insert, ids, payloads)
        _wake(self._table)


class AuditingReader(RawReader):
    """A RawReader for one request's reads that also takes the audit events of what they
    read (`events`, written by the request's owner), and opens an ORM session on the same
    connection for the rare read or write that needs SQLAlchemy (`session`)."""

    __slots__ = ("_open_session", "events")

    def __init__(
        self,
        raw: RawReader,
        events: OutboxBatch,
        open_session: Callable[[], Awaitable[AsyncSession]],
    ) -> None:
        super().__init__(raw._conn, raw._driver)
        self.events = events
        self._open_session = open_session

    async def session(self) -> AsyncSession:
        return await self._open_session()


async def record_event(
    session: AsyncSession | OutboxBatch, model: type[Any], record: AuditRecord
) -> None:
    """Add `record` to the outbox in the caller's transaction (delivered after it commits),
    or to a request's batch (written with the request's other events)."""
    if isinstance(session, OutboxBatch):
        session.add(record)
        return
    payload = _outbox_payload(record)
    session.add(
        model(
            id=record.id,
            payload=payload,
            attempts=0,
            # next_attempt_at is left to the column's server default, the database's clock like
            # the sender's query (no skew between the two). Set here as func.now() it made every
            # event its own INSERT; with plain values a request's events flush as one.
        )
    )
    _wake_after_commit(session, model.__tablename__)


# ---- the sender ---------------------------------------------------------------------------

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 10.0


def backoff_delay(
    attempts: int,
    *,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with jitter: the full delay is min(cap, base * 2^(attempts-1)); the
    wait is between half of it and all of it, so many senders do not retry in lock-step."""
    full = min(cap, base * 2 ** max(0, min(attempts, 32) - 1))
    return full * (0.5 + 0.5 * rand())


# A pass starts at most this often while events keep coming (OutboxSender.run): a bound on how
# long an event waits in a busy outbox before its pass, none after a quiet spell.
COALESCE_SECONDS = 0.05

# A pass's events go to audit in one call, whatever traces they come from; each trace among
# them gets a `doorward.audit.deliver` span of its own around that call, a child of the span
# that recorded its events, so the audit write shows in every producer's trace.
_HEX = frozenset("0123456789abcdef")

Parent = tuple[str, str]  # (trace id, span id), 32 and 16 hex digits


def delivery_groups(
    events: Sequence[audit_pb2.AuditEvent],
) -> dict[Parent | None, list[audit_pb2.AuditEvent]]:
    """Events by the span that recorded them; None for events without a usable one."""
    groups: dict[Parent | None, list[audit_pb2.AuditEvent]] = {}
    for message in events:
        trace_id, span_id = message.trace_id, message.producer_span_id
        key: Parent | None = (trace_id, span_id)
        if not (
            len(trace_id) == 32
            and len(span_id) == 16
            and set(trace_id) <= _HEX
            and set(span_id) <= _HEX
            and trace_id.strip("0")
            and span_id.strip("0")
        ):
            key = None
        groups.setdefault(key, []).append(message)
    return groups


def parent_context(parent: Parent) -> Context:
    """A context whose current span is the (remote) producer span `parent`."""
    span_context = trace.SpanContext(
        trace_id=int(parent[0], 16),
        span_id=int(parent[1], 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def _with_service(payload: bytes, service: str) -> audit_pb2.AuditEvent:
    message = audit_pb2.AuditEvent.FromString(payload)
    if not message.service:
        message.service = service
    return message


class OutboxSender:
    """Delivers a service's audit outbox to the audit service, forever (until cancelled)."""

    def __init__(
        self,
        db: Database,
        model: type[Any],
        channel: ServiceChannel,
        service_name: str,
        *,
        batch_size: int = 200,
        # A commit wakes the sender at once (_wake_after_commit): the poll only picks up
        # retries (backed off 0.5 s and more) and rows another replica left behind. At 0.25 s
        # it was four database passes a second in every process, each traced and stored.
        poll_interval: float = 1.0,
        deadline: float = 5.0,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        coalesce: float = COALESCE_SECONDS,
    ) -> None:
        self._db = db
        self._model = model
        self._coalesce = coalesce
        # Fixed texts on the asyncpg connection (Database.raw_transaction), built once per
        # table: through a Core connection the pass cost more CPU than the statements (the
        # transaction's bookkeeping, compiled-cache lookups, a greenlet hop per statement).
        # The ids go as one text[] parameter: the same text for any number of rows, so each
        # connection prepares it once (an `IN` list was a new text for every batch size).
        table: str = model.__tablename__
        self._due = (
            f"SELECT id, payload, attempts FROM {table} "  # noqa: S608 (the model's table)
            "WHERE next_attempt_at <= now() "
            "ORDER BY next_attempt_at, created_at LIMIT $1 FOR UPDATE SKIP LOCKED"
        )
        self._forget = f"DELETE FROM {table} WHERE id = ANY($1::text[])"  # noqa: S608
        self._later = (
            f"UPDATE {table} SET attempts = attempts + 1, "  # noqa: S608 (the model's table)
            "next_attempt_at = now() + $2::interval WHERE id = ANY($1::text[])"
        )
        self._channel = channel
        self._stub = audit_pb2_grpc.AuditStub(channel.channel)
        self._service = service_name
        self._batch = batch_size
        self._poll = poll_interval
        self._deadline = deadline
        self._wake = asyncio.Event()
        self._failures = 0
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap

    def _backoff(self, attempts: int) -> float:
        return backoff_delay(attempts, base=self._backoff_base, cap=self._backoff_cap)

    def notify(self) -> None:
        """Wake the loop now (e.g. after committing events from another process's view)."""
        self._wake.set()

    async def deliver_once(self) -> int:
        """Send one batch of due rows; returns how many were delivered (0: none or failed)."""
        # One transaction (commit at the end, rollback on any error or cancellation).
        async with self._db.raw_transaction() as raw:
            rows = await raw.fetch(self._due, self._batch)
            if not rows:
                return 0
            ids = [row[0] for row in rows]
            events = [_with_service(row[1], self._service) for row in rows]
            try:
                await self._send(events)
            except DoorwardError as error:
                AUDIT_WRITE_FAILURES.add(len(ids), path="outbox")
                attempts = max(row[2] for row in rows) + 1
                delay = self._backoff(attempts)
                log.warning(
                    "audit events not delivered yet",
                    extra={
                        "fields": {
                            "count": len(ids),
                            "attempts": attempts,
                            "code": error.code.value,
                            "retry_in": round(delay, 2),
                        }
                    },
                )
                await raw.execute(self._later, ids, timedelta(seconds=delay))
                return 0
            # Audit has committed them: forget them in the same transaction that locked them.
            # A crash before this commit leaves them locked by nobody and due: the next pass
            # (here or in another replica) sends them again, and audit keeps one of each.
            await raw.execute(self._forget, ids)
            return len(ids)

    async def _send(self, events: list[audit_pb2.AuditEvent]) -> None:
        """Deliver `events` in one call; all or nothing for the caller (audit ignores an event
        id it has, so a retry after a partial failure is harmless).

        One call, not one per trace: under load a pass holds the events of many requests (a
        call each had every call of a pass queue on audit's head lock), and past a bound a
        backlog went in one call with no trace at all. The call runs under the first trace's
        span (audit's side of the call joins that trace); every trace gets its own span around
        the call, ended with the call's outcome."""
        parents = [parent for parent in delivery_groups(events) if parent is not None]
        request = audit_pb2.AppendEventsRequest(events=events)
        spans = [
            _tracer.start_span(
                "doorward.audit.deliver",
                context=parent_context(parent),
                attributes={"doorward.audit.events": len(events)},
            )
            for parent in parents
        ]
        try:
            if spans:
                with trace.use_span(
                    spans[0],
                    end_on_exit=False,
                    record_exception=False,
                    set_status_on_exception=False,
                ):
                    await self._call(request)
            else:
                await self._call(request)
        except BaseException as exc:
            for span in spans:
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            for span in spans:
                span.end()

    async def _call(self, request: audit_pb2.AppendEventsRequest) -> None:
        await self._channel.call(
            self._stub.AppendEvents, request, deadline=self._deadline, what="audit"
        )

    async def run(self) -> None:
        waker = self._wake
        _wakers.setdefault(self._model.__tablename__, set()).add(waker)
        loop = asyncio.get_running_loop()
        last_pass = -math.inf
        try:
            while True:
                # Coalescing: a pass starts at most every `coalesce` seconds. Woken soon after
                # the last one (requests answering faster than passes run), it waits out the
                # rest of that interval, so the events of every request answered meanwhile go
                # in one pass: one locked select and one delete for all of them instead of a
                # transaction per request. Woken after a quiet spell, it starts at once. The
                # rows are committed with the answers before anyone waits: a crash meanwhile
                # loses nothing, the next pass (or replica) sends them.
                rest = last_pass + self._coalesce - loop.time()
                if rest > 0:
                    await asyncio.sleep(rest)
                last_pass = loop.time()
                try:
                    delivered = await self.deliver_once()
                    self._failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The outbox database itself failed: back off and try again.
                    self._failures += 1
                    log.exception("audit outbox pass failed")
                    await asyncio.sleep(self._backoff(self._failures))
                    continue
                if delivered >= self._batch:
                    continue  # more are probably waiting
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await waker.wait()
                waker.clear()
        finally:
            _wakers.get(self._model.__tablename__, set()).discard(waker)


# ---- the synchronous, fail-closed path -----------------------------------------------------

AUDIT_UNAVAILABLE_MESSAGE = "the audit trail cannot take the event"


class AuditClient:
    """Appends events synchronously; raises DoorwardError(UNAVAILABLE) if audit cannot take them."""

    def __init__(
        self, channel: ServiceChannel, *, service_name: str = "", deadline: float = 3.0
    ) -> None:
        self._channel = channel
        self._stub = audit_pb2_grpc.AuditStub(channel.channel)
        self._service = service_name
        self._deadline = deadline

    async def append(self, records: Sequence[AuditRecord] | Iterable[AuditRecord]) -> None:
        records = list(records)
        events = [record.to_proto(self._service) for record in records]
        if not events:
            return
        try:
            response = await self._channel.call(
                self._stub.AppendEvents,
                audit_pb2.AppendEventsRequest(events=events),
                deadline=self._deadline,
                what="audit",
            )
        except Exception as error:
            AUDIT_WRITE_FAILURES.add(len(events), path="sync")
            log.warning(
                "audit refused or unreachable (fail closed)",
                extra={"fields": {"count": len(events), "error": type(error).__name__}},
            )
            raise DoorwardError(ErrorCode.UNAVAILABLE, AUDIT_UNAVAILABLE_MESSAGE) from None
        if response.accepted + response.duplicates != len(events):
            AUDIT_WRITE_FAILURES.add(len(events), path="sync")
            raise DoorwardError(ErrorCode.UNAVAILABLE, AUDIT_UNAVAILABLE_MESSAGE)
        # Only events audit has taken are named on the decision span.
        for record in records:
            note_audit_event(record.id, record.outcome)


__all__ = [
    "ALLOWED_DETAIL_KEYS",
    "AuditClient",
    "AuditDetailsError",
    "AuditOutboxMixin",
    "AuditRecord",
    "AuditingReader",
    "OutboxBatch",
    "OutboxSender",
    "Outcome",
    "backoff_delay",
    "clean_details",
    "looks_personal",
    "record_event",
]
