"""doorward_kit.db's raw reads (issue 11): fixed SQL text on the asyncpg connection under
SQLAlchemy's pool. The same rows as SQLAlchemy's Core statement, the same span, the same
transaction (or autocommit), the same pool, and nothing left behind on the connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text

from doorward_kit.db import Database, RawReader, raw_reader
from tests.fixtures.round_trips import keywords, simple_statements, statements_of
from tests.fixtures.spans import memory_spans

pytestmark = pytest.mark.integration

CANARY = "canary-7f3e0c"  # a parameter value that must never reach a span

SCHEMA = """CREATE TABLE things (
    id varchar(36) PRIMARY KEY, org_id varchar(64) NOT NULL, name text NOT NULL,
    blob bytea, at timestamptz NOT NULL DEFAULT now(), live boolean NOT NULL DEFAULT true,
    n bigint NOT NULL DEFAULT 0, tags varchar(20)[] NOT NULL DEFAULT '{}',
    details jsonb NOT NULL DEFAULT '{}')"""
RAW = (
    "SELECT id, org_id, name, blob, at, live, n, tags::text[], details FROM things"
    " WHERE org_id = $1 AND id = ANY($2::text[]) ORDER BY id"
)
CORE = (
    "SELECT id, org_id, name, blob, at, live, n, tags, details FROM things"
    " WHERE org_id = :org AND id = ANY(CAST(:ids AS text[])) ORDER BY id"
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """One in-memory exporter on the process's provider (added once), emptied per test."""
    yield memory_spans("raw-reads-tests")


async def _database(postgres: Any, prefix: str) -> Database:
    db = Database(postgres.fresh_database(prefix))
    async with db.unit_of_work() as session:
        await session.execute(text(SCHEMA))
        await session.execute(
            text(
                "INSERT INTO things (id, org_id, name, blob, n, tags, details) VALUES"
                " ('a', 'o1', 'Alpha', 'ab', 1, '{x,y}', '{\"k\": [1, 2]}'),"
                " ('b', 'o1', 'Beta', NULL, 2, '{}', '{}'),"
                " ('c', 'o2', 'Gamma', 'cd', 3, '{z}', '{\"k\": null}')"
            )
        )
    return db


async def test_rows_are_the_core_statements_rows(postgres: Any) -> None:
    db = await _database(postgres, "rawrows")
    try:
        async with db.reads() as session:
            core = [
                tuple(r)
                for r in await session.execute(text(CORE), {"org": "o1", "ids": ["a", "b", "c"]})
            ]
        for reader in ("raw_reads", "session", "connection"):
            if reader == "raw_reads":
                async with db.raw_reads() as raw:
                    rows = await raw.fetch(RAW, "o1", ["a", "b", "c"])
            elif reader == "session":
                async with db.reads() as session:
                    rows = await (await raw_reader(session)).fetch(RAW, "o1", ["a", "b", "c"])
            else:
                async with db.read_connection() as conn:
                    rows = await (await raw_reader(conn)).fetch(RAW, "o1", ["a", "b", "c"])
            # Another organisation's row is not there: the filter is the statement's own.
            assert [tuple(r) for r in rows] == core, reader
        assert [r[0] for r in core] == ["a", "b"]
        assert core[0][7] == ["x", "y"] and core[0][8] == {"k": [1, 2]}
        async with db.raw_reads() as raw:
            one = await raw.fetchrow(RAW, "o2", ["c"])
            none = await raw.fetchrow(RAW, "o2", ["a"])
        assert one is not None and one["name"] == "Gamma" and none is None
    finally:
        await db.dispose()


async def test_a_raw_statement_is_the_same_span_as_sqlalchemys(
    postgres: Any, spans: InMemorySpanExporter
) -> None:
    """Name, kind, parent and every attribute but the statement's text are those the
    SQLAlchemy instrumentation gives the same query; the text has placeholders only; outside a
    trace there is no span, as for SQLAlchemy's statements."""
    db = await _database(postgres, "rawspan")
    tracer = trace.get_tracer("test")
    try:
        async with db.reads() as session:  # warm
            await session.execute(text("SELECT 1"))
        spans.clear()
        with tracer.start_as_current_span("request") as request:
            async with db.reads() as session:
                await session.execute(text(CORE), {"org": CANARY, "ids": [CANARY]})
            async with db.raw_reads() as raw:
                await raw.fetch(RAW, CANARY, [CANARY])
        # This trace's spans only: work other tests left in the shared loop may trace too.
        ours = request.get_span_context().trace_id
        core, raw_span = (
            s
            for s in spans.get_finished_spans()
            if s.context.trace_id == ours and s.name != "request"
        )
        assert raw_span.name == core.name == "SELECT"
        assert raw_span.kind == core.kind == SpanKind.CLIENT
        assert raw_span.parent is not None
        assert raw_span.parent.span_id == request.get_span_context().span_id
        core_attrs, raw_attrs = dict(core.attributes or {}), dict(raw_span.attributes or {})
        assert raw_attrs.pop("db.statement") == RAW
        core_attrs.pop("db.statement")
        assert raw_attrs == core_attrs and raw_attrs["db.system"] == "postgresql"
        assert CANARY not in str(raw_span.to_json())

        spans.clear()
        async with db.raw_reads() as raw:  # a background poll: no trace above it
            await raw.fetch(RAW, "o1", ["a"])
        assert not [
            s
            for s in spans.get_finished_spans()
            if dict(s.attributes or {}).get("db.statement") == RAW
        ]
    finally:
        await db.dispose()


async def test_a_failed_raw_statement_ends_its_span_as_an_error_and_leaves_a_usable_pool(
    postgres: Any, spans: InMemorySpanExporter
) -> None:
    db = await _database(postgres, "rawerr")
    try:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            async with db.raw_reads() as raw:
                with pytest.raises(asyncpg.PostgresError):
                    await raw.fetch("SELECT 1 / $1::int", 0)
                # The same connection answers the next statement.
                assert (await raw.fetchrow("SELECT $1::int + 1", 1)) == (2,)
        ours = request.get_span_context().trace_id
        failed = next(
            s
            for s in spans.get_finished_spans()
            if s.name == "SELECT" and s.context.trace_id == ours
        )
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.end_time is not None
        assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await db.dispose()


async def test_raw_reads_send_no_transaction_and_leave_the_connection_as_it_was(
    postgres: Any,
) -> None:
    """A raw_reads() block is one checkout and its statements: no BEGIN, no COMMIT, no switch
    of isolation level. The same pooled connection then serves a unit of work as before (its
    BEGIN and COMMIT), and an autocommit session (no BEGIN)."""
    db = Database(postgres.fresh_database("rawtx"), pool_size=1, ping_after_idle=60)
    try:
        async with db.unit_of_work() as session:  # warm: the first checkout is pinged
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        with statements_of(db.engine) as queries, simple_statements(db.engine) as extra:
            async with db.raw_reads() as raw:
                assert (await raw.fetchrow("SELECT pg_backend_pid()")) == (pid,)
                first = await raw.fetchrow("SELECT now()")
                await asyncio.sleep(0.02)
                second = await raw.fetchrow("SELECT now()")
        # each statement on its own (no transaction: a transaction's now() stands still)
        assert first is not None and second is not None and first[0] < second[0]
        assert queries == ["SELECT pg_backend_pid()", "SELECT now()", "SELECT now()"]
        assert extra == []
        with simple_statements(db.engine) as sent:
            async with db.unit_of_work() as session:
                await session.execute(text("SELECT 1"))
        assert keywords(sent) == ["BEGIN", "COMMIT"]
        with simple_statements(db.engine) as sent:
            async with db.reads() as session:
                await session.execute(text("SELECT 1"))
        assert sent == []
    finally:
        await db.dispose()


async def test_inside_a_unit_of_work_a_raw_read_is_part_of_its_transaction(
    postgres: Any,
) -> None:
    """As the first statement it begins the transaction SQLAlchemy's statements then continue
    (one transaction time); later, it sees the unit of work's own uncommitted writes; a
    rollback takes those away for everybody."""
    db = await _database(postgres, "rawuow")
    try:
        with pytest.raises(RuntimeError, match="undo"):
            async with db.unit_of_work() as session:
                raw = await raw_reader(session)
                first = await raw.fetchrow("SELECT now()")
                await asyncio.sleep(0.02)
                later = (await session.execute(text("SELECT now()"))).scalar_one()
                assert first is not None and first[0] == later
                await session.execute(
                    text("INSERT INTO things (id, org_id, name) VALUES ('d', 'o1', 'Delta')")
                )
                rows = await (await raw_reader(session)).fetch(RAW, "o1", ["d"])
                assert [r["name"] for r in rows] == ["Delta"]
                raise RuntimeError("undo")
        async with db.raw_reads() as raw:
            assert await raw.fetch(RAW, "o1", ["d"]) == []
        async with db.reads() as session:  # autocommit: each raw statement on its own
            raw = await raw_reader(session)
            first = await raw.fetchrow("SELECT now()")
            await asyncio.sleep(0.02)
            second = await raw.fetchrow("SELECT now()")
            assert first is not None and second is not None and first[0] < second[0]
    finally:
        await db.dispose()


async def test_a_raw_reader_is_handed_through_and_type_lookups_are_not_needed(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """raw_reader(RawReader) is the reader itself; and text[] parameters and built-in column
    types need no catalogue lookup on a new connection (asyncpg's type introspection, which
    varchar[] costs)."""
    db = await _database(postgres, "rawtypes")
    lookups: list[Any] = []
    introspect = asyncpg.Connection._introspect_types

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(args)
        return await introspect(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "_introspect_types", counted)
    try:
        async with db.raw_reads() as raw:
            assert await raw_reader(raw) is raw
            assert isinstance(raw, RawReader)
            await raw.fetch(RAW, "o1", ["a"])
            assert lookups == []
            await raw.fetch("SELECT tags FROM things WHERE id = ANY($1::varchar[])", ["a"])
            assert lookups  # what the text[] form avoids
    finally:
        await db.dispose()
