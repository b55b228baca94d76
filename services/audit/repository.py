"""All of audit's SQL. Every query is filtered by organisation, except the checkpoint job's
list of organisations whose chain grew (it reads only ids and counts)."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    String,
    and_,
    any_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.db import Reader, raw_reader
from services.audit.chain import GENESIS_HASH
from services.audit.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditHead,
    AuditPrune,
    SecurityAlert,
)

EVENT_COLUMNS = AuditEvent.__table__.c
STREAM_CHUNK = 5000


class TrailEvent(NamedTuple):
    """An event as the trails answer it: the columns AuditEvent shows, nothing more. A tuple,
    because reading a field of one is nearly free, while a SQLAlchemy Row looks every name up
    (17 lookups for each of a board's 200+ events were most of the trail's own CPU)."""

    seq: int
    id: str
    occurred_at: datetime
    actor_id: str
    action: str
    outcome: str
    work_order_id: str
    secret_ref_id: str
    target_type: str
    target_id: str
    trace_id: str
    source_ip: str
    service: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


class StoredDetails(Mapping[str, Any]):
    """An event's details as the trail read them (jsonb as text), parsed at first use. A board
    reads 200 events and shows none of their details: parsing them all (the jsonb codec calls
    json.loads row by row) was a third of the trail read's CPU."""

    __slots__ = ("_parsed", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._parsed: dict[str, Any] | None = None

    def _value(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = json.loads(self._text)
        return self._parsed

    def __getitem__(self, key: str) -> Any:
        return self._value()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value())

    def __len__(self) -> int:
        return len(self._value())

    def __repr__(self) -> str:
        return repr(self._value())


# The trails of a batch of work orders, as the text asyncpg prepares once per connection, run
# on the asyncpg connection itself (doorward_kit.db RawReader): through SQLAlchemy, building
# the Result and its Rows for 200 events cost more CPU than PostgreSQL spent. One LATERAL
# subquery per id walks ix_audit_events_work_order backwards and stops at the limit. Its
# columns are TrailEvent's, in its order (tests/unit/kit checks), details as text (parsed only
# when shown: StoredDetails); the ids come as text[] (a built-in codec for asyncpg; varchar[]
# cost a type lookup on every new connection).
#
# A trail may read fewer columns (`trail_sql`): the board shows two fields of 200 events, and
# reading, sending and decoding all sixteen (two 64-character hashes, the details' jsonb as
# text, a timestamp) cost audit about three times the CPU of the four it needs, and PostgreSQL
# twice its own. Any subset of TrailEvent's columns, in TrailEvent's order, always with `seq`
# (the order) and `work_order_id` (whose trail a row is).
TRAIL_COLUMNS: tuple[str, ...] = TrailEvent._fields
TRAIL_KEY_COLUMNS = frozenset({"seq", "work_order_id"})


@functools.lru_cache(maxsize=64)
def trail_sql(columns: tuple[str, ...] = TRAIL_COLUMNS) -> str:
    """The trails' statement answering `columns` (a subset of TrailEvent's, in its order, with
    seq and work_order_id), one text per subset (asyncpg prepares each once per connection)."""
    if (
        not set(columns) >= TRAIL_KEY_COLUMNS
        or not set(columns) <= set(TRAIL_COLUMNS)
        or list(columns) != [c for c in TRAIL_COLUMNS if c in columns]
    ):
        raise ValueError("trail columns: a subset of TrailEvent's, in order, with the keys")
    listed = ", ".join("details::text" if name == "details" else name for name in columns)
    return (
        "SELECT e.* FROM unnest($2::text[]) AS w(id) JOIN LATERAL ("  # noqa: S608 (constants)
        f"SELECT {listed} FROM audit_events"
        " WHERE org_id = $1 AND work_order_id = w.id ORDER BY seq DESC LIMIT $3"
        ") AS e ON true ORDER BY e.seq"
    )


_TRAILS = trail_sql(TRAIL_COLUMNS)

# The columns an append writes (received_at is the database's clock), one array parameter each:
# the same SQL text for any number of events (one prepared statement), no ORM unit of work.
# An append's statements are fixed texts run on the session's own connection and transaction
# (doorward_kit.db.raw_reader): through SQLAlchemy each of its three statements cost more CPU
# (the text's compiled-cache lookup, a greenlet hop, the Result) than its round trip.
_APPEND_COLUMNS = TrailEvent._fields  # an event's every column but org_id, in order
_ARRAY_TYPES = {"seq": "bigint[]", "occurred_at": "timestamptz[]"}  # the rest text[]
_INSERT_SQL = (
    f"INSERT INTO audit_events (org_id, {', '.join(_APPEND_COLUMNS)}) "  # noqa: S608 (constants)
    "SELECT $1, "
    + ", ".join("e.details::jsonb" if c == "details" else f"e.{c}" for c in _APPEND_COLUMNS)
    + " FROM unnest("
    + ", ".join(
        f"${n}::{_ARRAY_TYPES.get(c, 'text[]')}" for n, c in enumerate(_APPEND_COLUMNS, start=2)
    )
    + f") AS e({', '.join(_APPEND_COLUMNS)})"
)
_HEAD_SEQ, _HEAD_HASH = len(_APPEND_COLUMNS) + 2, len(_APPEND_COLUMNS) + 3
# A data-modifying WITH runs whether or not the UPDATE reads it: one round trip per append.
_APPEND_SQL = (
    f"WITH inserted AS ({_INSERT_SQL}) "  # noqa: S608 (constants, no input)
    f"UPDATE audit_heads SET seq = ${_HEAD_SEQ}, hash = ${_HEAD_HASH} WHERE org_id = $1"
)
_LOCK_HEAD_SQL = "SELECT seq, hash FROM audit_heads WHERE org_id = $1 FOR UPDATE"
_STORED_AND_DEACTIVATED_SQL = (
    "SELECT 'stored', id, NULL::timestamptz FROM audit_events "
    "WHERE org_id = $1 AND id = ANY($2::text[]) "
    "UNION ALL "
    "SELECT 'deactivated', target_id, max(occurred_at) FROM audit_events "
    "WHERE org_id = $1 AND action = $3 AND outcome = 'ALLOWED' "
    "AND target_id = ANY($4::text[]) GROUP BY target_id"
)


def _event_arrays(org_id: str, rows: list[dict[str, Any]]) -> list[Any]:
    """_INSERT_SQL's parameters: the org, then one array per column of _APPEND_COLUMNS."""
    params: list[Any] = [org_id]
    for name in _APPEND_COLUMNS:
        if name == "details":
            params.append([json.dumps(r["details"]) for r in rows])
        else:
            params.append([r[name] for r in rows])
    return params


@dataclass(frozen=True)
class EventFilter:
    actor_id: str | None = None
    work_order_id: str | None = None
    secret_ref_id: str | None = None
    action: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None


# A trail row: TrailEvent's columns in its order, details as the jsonb's text.
TrailRow = Sequence[Any]
_DETAILS = TrailEvent._fields.index("details")
Event = TypeVar("Event")


def trail_event(row: TrailRow) -> TrailEvent:
    """A trail row as a TrailEvent (its details parsed at first use)."""
    return TrailEvent._make((*row[:_DETAILS], StoredDetails(row[_DETAILS]), *row[_DETAILS + 1 :]))


async def recent_events_of_work_orders(
    reader: Reader,
    org_id: str,
    work_order_ids: Sequence[str],
    limit: int,
    make: Callable[[TrailRow], Event],
    columns: tuple[str, ...] = TRAIL_COLUMNS,
) -> dict[str, list[Event]]:
    """The newest `limit` events of each work order, oldest first, in ONE query for the whole
    batch (a board of 20 jobs is one round trip, not 20 sessions). Each row is made into the
    caller's object by `make` (`trail_event`, or the GraphQL layer's own event straight from
    the row: a TrailEvent first, then a copy of it, was a third of audit's board execution);
    never ORM objects: building 200 of those per board was most of audit's CPU. `reader` may
    be a bare RawReader (Database.raw_reads): the board's trails need no session. A row has
    `columns` (trail_sql), all of TrailEvent's unless the caller needs fewer."""
    result: dict[str, list[Event]] = {w: [] for w in work_order_ids}
    if not work_order_ids:
        return result
    sql = trail_sql(columns)
    raw = await raw_reader(reader)
    rows = await raw.fetch(sql, org_id, list(result), limit)
    work_order = columns.index("work_order_id")
    for row in rows:
        result[row[work_order]].append(make(row))
    return result


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---- chain ----------------------------------------------------------------------------

    async def lock_head(self, org_id: str) -> tuple[int, str]:
        """The org's head, locked until commit: appends to one chain run one at a time. One
        statement once the org has a head (every org after its first event); the first event
        creates it (ON CONFLICT: two first batches at once create one) and locks it."""
        raw = await raw_reader(self.session)
        row = await raw.fetchrow(_LOCK_HEAD_SQL, org_id)
        if row is None:
            await self.session.execute(
                pg_insert(AuditHead)
                .values(org_id=org_id, seq=0, hash=GENESIS_HASH)
                .on_conflict_do_nothing(index_elements=["org_id"])
            )
            row = await raw.fetchrow(_LOCK_HEAD_SQL, org_id)
            if row is None:  # pragma: no cover - the row was just made or found
                raise RuntimeError("audit head missing after its creation")
        return int(row[0]), str(row[1])

    async def set_head(self, org_id: str, seq: int, hash_: str) -> None:
        await self.session.execute(
            update(AuditHead).where(AuditHead.org_id == org_id).values(seq=seq, hash=hash_)
        )

    async def head(self, org_id: str) -> tuple[int, str] | None:
        row = (
            await self.session.execute(
                select(AuditHead.seq, AuditHead.hash).where(AuditHead.org_id == org_id)
            )
        ).one_or_none()
        return (int(row.seq), str(row.hash)) if row else None

    async def stored_ids_and_deactivations(
        self, org_id: str, ids: Sequence[str], actors: Iterable[str], deactivate_action: str
    ) -> tuple[set[str], dict[str, datetime]]:
        """In one statement (read after the head lock): which of `ids` the org has stored
        already, and when each of `actors` was last deactivated (for those who were)."""
        raw = await raw_reader(self.session)
        rows = await raw.fetch(
            _STORED_AND_DEACTIVATED_SQL,
            org_id,
            list(ids),
            deactivate_action,
            sorted({a for a in actors if a}),
        )
        stored: set[str] = set()
        deactivated: dict[str, datetime] = {}
        for kind, key, at in rows:
            if kind == "stored":
                stored.add(key)
            else:
                deactivated[key] = at
        return stored, deactivated

    async def insert_events(self, org_id: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            raw = await raw_reader(self.session)
            await raw.execute(_INSERT_SQL, *_event_arrays(org_id, rows))

    async def append_events(
        self, org_id: str, rows: list[dict[str, Any]], seq: int, hash_: str
    ) -> None:
        """Insert the org's new events and move its head to (seq, hash_), in one statement."""
        raw = await raw_reader(self.session)
        await raw.execute(_APPEND_SQL, *_event_arrays(org_id, rows), seq, hash_)

    # ---- reads ----------------------------------------------------------------------------

    def _filtered(self, org_id: str, f: EventFilter) -> list[Any]:
        where: list[Any] = [AuditEvent.org_id == org_id]
        if f.actor_id is not None:
            where.append(AuditEvent.actor_id == f.actor_id)
        if f.work_order_id is not None:
            where.append(AuditEvent.work_order_id == f.work_order_id)
        if f.secret_ref_id is not None:
            where.append(AuditEvent.secret_ref_id == f.secret_ref_id)
        if f.action is not None:
            where.append(AuditEvent.action == f.action)
        if f.occurred_from is not None:
            where.append(AuditEvent.occurred_at >= f.occurred_from)
        if f.occurred_to is not None:
            where.append(AuditEvent.occurred_at <= f.occurred_to)
        return where

    async def list_events(
        self, org_id: str, f: EventFilter, *, before_seq: int | None, limit: int
    ) -> list[AuditEvent]:
        """Newest first; keyset pagination on seq."""
        where = self._filtered(org_id, f)
        if before_seq is not None:
            where.append(AuditEvent.seq < before_seq)
        rows = await self.session.execute(
            select(AuditEvent).where(*where).order_by(AuditEvent.seq.desc()).limit(limit)
        )
        return list(rows.scalars())

    async def recent_events(self, org_id: str, f: EventFilter, limit: int) -> list[AuditEvent]:
        """The newest `limit` matching events, oldest first."""
        rows = await self.list_events(org_id, f, before_seq=None, limit=limit)
        return rows[::-1]

    async def event_by_id(self, org_id: str, event_id: str) -> AuditEvent | None:
        row = await self.session.execute(
            select(AuditEvent).where(AuditEvent.org_id == org_id, AuditEvent.id == event_id)
        )
        return row.scalar_one_or_none()

    async def events_of_trace(self, org_id: str, trace_id: str, limit: int) -> list[AuditEvent]:
        """The org's events recorded in one trace, oldest first."""
        rows = await self.session.execute(
            select(AuditEvent)
            .where(AuditEvent.org_id == org_id, AuditEvent.trace_id == trace_id)
            .order_by(AuditEvent.seq)
            .limit(limit)
        )
        return list(rows.scalars())

    async def trace_ids_of_actor(
        self,
        org_id: str,
        actor_id: str,
        occurred_from: datetime | None,
        occurred_to: datetime | None,
        limit: int,
    ) -> list[str]:
        """The traces in which `actor_id`'s actions were audited, newest first."""
        where: list[Any] = [
            AuditEvent.org_id == org_id,
            AuditEvent.actor_id == actor_id,
            AuditEvent.trace_id != "",
        ]
        if occurred_from is not None:
            where.append(AuditEvent.occurred_at >= occurred_from)
        if occurred_to is not None:
            where.append(AuditEvent.occurred_at <= occurred_to)
        rows = await self.session.execute(
            select(AuditEvent.trace_id)
            .where(*where)
            .group_by(AuditEvent.trace_id)
            .order_by(func.max(AuditEvent.seq).desc())
            .limit(limit)
        )
        return list(rows.scalars())

    async def stream_events(
        self,
        org_id: str,
        f: EventFilter | None = None,
        *,
        up_to_seq: int | None = None,
        after_seq: int = 0,
    ) -> AsyncIterator[dict[str, Any]]:
        """Matching events oldest first, fetched in chunks (keyset on seq: no long cursor)."""
        where = self._filtered(org_id, f or EventFilter())
        if up_to_seq is not None:
            where.append(AuditEvent.seq <= up_to_seq)
        after = after_seq
        while True:
            rows = (
                await self.session.execute(
                    select(AuditEvent.__table__)
                    .where(*where, AuditEvent.seq > after)
                    .order_by(AuditEvent.seq)
                    .limit(STREAM_CHUNK)
                )
            ).mappings()
            chunk = [dict(r) for r in rows]
            for row in chunk:
                yield row
            if len(chunk) < STREAM_CHUNK:
                return
            after = int(chunk[-1]["seq"])

    async def leaf_hashes(self, org_id: str, tree_size: int) -> list[str]:
        rows = await self.session.execute(
            select(AuditEvent.hash)
            .where(AuditEvent.org_id == org_id, AuditEvent.seq <= tree_size)
            .order_by(AuditEvent.seq)
        )
        return list(rows.scalars())

    # ---- rules ----------------------------------------------------------------------------

    async def count_since(
        self,
        org_id: str,
        actor_id: str,
        since: datetime,
        until: datetime,
        *,
        action: str | None = None,
        outcome: str | None = None,
    ) -> int:
        where = [
            AuditEvent.org_id == org_id,
            AuditEvent.actor_id == actor_id,
            AuditEvent.occurred_at > since,
            AuditEvent.occurred_at <= until,
        ]
        if action is not None:
            where.append(AuditEvent.action == action)
        if outcome is not None:
            where.append(AuditEvent.outcome == outcome)
        statement = select(func.count()).select_from(AuditEvent).where(*where)
        value = await self.session.scalar(statement)
        return int(value or 0)

    async def insert_alert(self, values: dict[str, Any]) -> bool:
        """False when an alert with the same dedup key exists already."""
        result = await self.session.execute(
            pg_insert(SecurityAlert)
            .values(**values)
            .on_conflict_do_nothing(constraint="uq_security_alerts_dedup")
            .returning(SecurityAlert.id)
        )
        return result.scalar_one_or_none() is not None

    async def list_alerts(
        self, org_id: str, *, before: tuple[datetime, str] | None, limit: int
    ) -> list[SecurityAlert]:
        where: list[Any] = [SecurityAlert.org_id == org_id]
        if before is not None:
            raised, alert_id = before
            where.append(
                or_(
                    SecurityAlert.raised_at < raised,
                    and_(SecurityAlert.raised_at == raised, SecurityAlert.id < alert_id),
                )
            )
        rows = await self.session.execute(
            select(SecurityAlert)
            .where(*where)
            .order_by(SecurityAlert.raised_at.desc(), SecurityAlert.id.desc())
            .limit(limit)
        )
        return list(rows.scalars())

    # ---- checkpoints ----------------------------------------------------------------------

    async def checkpoints(
        self, org_id: str, up_to_size: int | None = None
    ) -> list[AuditCheckpoint]:
        where: list[Any] = [AuditCheckpoint.org_id == org_id]
        if up_to_size is not None:
            where.append(AuditCheckpoint.tree_size <= up_to_size)
        rows = await self.session.execute(
            select(AuditCheckpoint).where(*where).order_by(AuditCheckpoint.tree_size)
        )
        return list(rows.scalars())

    async def checkpoint_at(self, org_id: str, tree_size: int) -> AuditCheckpoint | None:
        row = await self.session.execute(
            select(AuditCheckpoint).where(
                AuditCheckpoint.org_id == org_id, AuditCheckpoint.tree_size == tree_size
            )
        )
        return row.scalar_one_or_none()

    async def latest_checkpoint(self, org_id: str) -> AuditCheckpoint | None:
        row = await self.session.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.org_id == org_id)
            .order_by(AuditCheckpoint.tree_size.desc())
            .limit(1)
        )
        return row.scalar_one_or_none()

    async def insert_checkpoint(self, values: dict[str, Any]) -> None:
        await self.session.execute(
            pg_insert(AuditCheckpoint).values(**values).on_conflict_do_nothing()
        )

    async def try_lock_checkpoint(self, org_id: str) -> bool:
        """Held until the transaction ends: one replica signs an org's checkpoint at a time;
        the others skip it (it is being done) instead of verifying the same chain again."""
        key = func.hashtextextended(f"doorward-audit-checkpoint:{org_id}", 0)
        return bool(await self.session.scalar(select(func.pg_try_advisory_xact_lock(key))))

    async def needs_checkpoint(self, org_id: str) -> bool:
        """The org's chain grew past its last signed checkpoint (read after try_lock_checkpoint:
        a replica that signed just before us has made this False)."""
        signed = select(func.coalesce(func.max(AuditCheckpoint.tree_size), 0)).where(
            AuditCheckpoint.org_id == org_id
        )
        head = select(AuditHead.seq).where(AuditHead.org_id == org_id)
        return bool(
            await self.session.scalar(select(head.scalar_subquery() > signed.scalar_subquery()))
        )

    async def orgs_with_events(self) -> list[str]:
        """Every organisation with a chain (the whole-chain check's one cross-organisation
        read; ids only)."""
        rows = await self.session.execute(select(AuditHead.org_id).order_by(AuditHead.org_id))
        return list(rows.scalars())

    async def orgs_needing_checkpoint(self) -> list[str]:
        """Organisations whose chain grew since their last signed checkpoint (all orgs: the
        background job's one cross-organisation read; ids only)."""
        signed = (
            select(AuditCheckpoint.org_id, func.max(AuditCheckpoint.tree_size).label("size"))
            .group_by(AuditCheckpoint.org_id)
            .subquery()
        )
        rows = await self.session.execute(
            select(AuditHead.org_id)
            .outerjoin(signed, signed.c.org_id == AuditHead.org_id)
            .where(AuditHead.seq > func.coalesce(signed.c.size, 0))
            .order_by(AuditHead.org_id)
        )
        return list(rows.scalars())

    # ---- pruning --------------------------------------------------------------------------

    async def latest_prune(self, org_id: str) -> AuditPrune | None:
        return (
            await self.session.execute(
                select(AuditPrune)
                .where(AuditPrune.org_id == org_id)
                .order_by(AuditPrune.tree_size.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    async def prunes(self, org_id: str) -> list[AuditPrune]:
        rows = await self.session.execute(
            select(AuditPrune).where(AuditPrune.org_id == org_id).order_by(AuditPrune.tree_size)
        )
        return list(rows.scalars())

    async def first_seq_since(self, org_id: str, since: datetime) -> int | None:
        """The first event of the org that happened at or after `since` (None: none did)."""
        return (
            await self.session.execute(
                select(func.min(AuditEvent.seq)).where(
                    AuditEvent.org_id == org_id, AuditEvent.occurred_at >= since
                )
            )
        ).scalar_one()

    async def first_seq_naming(self, org_id: str, ids: Sequence[str]) -> int | None:
        """The org's first event about one of `ids` (as its work order or its target)."""
        if not ids:
            return None
        wanted = bindparam("held", value=list(ids), type_=ARRAY(String))
        return (
            await self.session.execute(
                select(func.min(AuditEvent.seq)).where(
                    AuditEvent.org_id == org_id,
                    or_(
                        AuditEvent.work_order_id == any_(wanted),
                        AuditEvent.target_id == any_(wanted),
                    ),
                )
            )
        ).scalar_one()

    async def insert_prune(self, values: dict[str, Any]) -> None:
        await self.session.execute(insert(AuditPrune).values(**values))

    async def prune_through(self, org_id: str, through: int) -> int:
        """Delete events 1..through through the database's own guarded function."""
        result = await self.session.execute(
            text("SELECT doorward_audit_prune(:org, :through)"),
            {"org": org_id, "through": through},
        )
        return int(result.scalar_one())
