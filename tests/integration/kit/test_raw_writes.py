"""doorward_kit.db's raw writes (issue 11): `RawReader.execute` and `Database.raw_transaction`,
what the audit outbox's request batch and sender pass run on instead of an ORM session or a
Core transaction. Traced as SQLAlchemy's statements are, committed or rolled back as a unit
of work is, and nothing left open on the pooled connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text

from doorward_kit.db import Database
from tests.fixtures.spans import memory_spans

pytestmark = pytest.mark.integration

CANARY = "canary-5d1a9b"  # a parameter value that must never reach a span
INSERT = "INSERT INTO things (id, note) SELECT * FROM unnest($1::text[], $2::text[])"
COUNT = "SELECT count(*) FROM things"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    yield memory_spans("raw-writes-tests")


async def _database(postgres: Any, prefix: str) -> Database:
    db = Database(postgres.fresh_database(prefix))
    async with db.unit_of_work() as session:
        await session.execute(text("CREATE TABLE things (id varchar(36) PRIMARY KEY, note text)"))
    return db


async def _count(db: Database) -> int:
    async with db.raw_reads() as raw:
        row = await raw.fetchrow(COUNT)
    assert row is not None
    return int(row[0])


async def _clean_checkout(db: Database) -> None:
    """The next checkout of the pool is outside any transaction, and nothing is checked out."""
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with db.raw_reads() as raw:
        row = await raw.fetchrow("SELECT pg_current_xact_id_if_assigned() IS NULL, now()")
        later = await raw.fetchrow("SELECT now()")
    assert row is not None and later is not None
    assert row[0] is True
    assert later[0] >= row[1]  # no transaction: each statement has its own now()


async def test_a_raw_write_is_traced_like_sqlalchemys_and_commits_at_once_outside_a_transaction(
    postgres: Any, spans: InMemorySpanExporter
) -> None:
    db = await _database(postgres, "rawwrite")
    try:
        spans.clear()
        with trace.get_tracer("test").start_as_current_span("request") as request:
            async with db.raw_reads() as raw:
                status = await raw.execute(INSERT, ["a", "b"], [CANARY, CANARY])
        assert status == "INSERT 0 2"
        ours = request.get_span_context().trace_id  # other tests' leftover work may trace
        (span,) = (
            s
            for s in spans.get_finished_spans()
            if s.context.trace_id == ours and s.name != "request"
        )
        assert span.name == "INSERT" and span.kind == SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert dict(span.attributes or {})["db.statement"] == INSERT
        assert CANARY not in str(span.to_json())
        assert await _count(db) == 2  # committed on its own
        await _clean_checkout(db)
    finally:
        await db.dispose()


async def test_a_raw_transaction_commits_when_the_block_succeeds(postgres: Any) -> None:
    db = await _database(postgres, "rawtxok")
    try:
        async with db.raw_transaction() as raw:
            await raw.execute(INSERT, ["a"], ["x"])
            # Inside the transaction: one snapshot, one transaction id.
            row = await raw.fetchrow("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
            assert row is not None and row[0] is True
        assert await _count(db) == 1
        await _clean_checkout(db)
    finally:
        await db.dispose()


async def test_a_raw_transaction_rolls_back_when_the_block_raises_or_is_cancelled(
    postgres: Any,
) -> None:
    db = await _database(postgres, "rawtxno")
    try:
        with pytest.raises(RuntimeError):
            async with db.raw_transaction() as raw:
                await raw.execute(INSERT, ["a"], ["x"])
                raise RuntimeError("the pass failed")
        assert await _count(db) == 0
        await _clean_checkout(db)

        inserted = asyncio.Event()

        async def stuck() -> None:
            async with db.raw_transaction() as raw:
                await raw.execute(INSERT, ["b"], ["y"])
                inserted.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(stuck())
        await inserted.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _count(db) == 0
        await _clean_checkout(db)
    finally:
        await db.dispose()


async def test_rows_locked_by_a_failed_raw_transaction_are_free_again(postgres: Any) -> None:
    """The outbox pass locks its rows (FOR UPDATE SKIP LOCKED): a pass that fails must not
    leave them locked for the next one, here or in another replica."""
    db = await _database(postgres, "rawtxlock")
    try:
        async with db.raw_reads() as raw:
            await raw.execute(INSERT, ["a", "b"], ["x", "y"])
        lock = "SELECT id FROM things ORDER BY id FOR UPDATE SKIP LOCKED"
        with pytest.raises(RuntimeError):
            async with db.raw_transaction() as raw:
                assert len(await raw.fetch(lock)) == 2
                raise RuntimeError("audit did not answer")
        async with db.raw_transaction() as raw:
            assert [r[0] for r in await raw.fetch(lock)] == ["a", "b"]
    finally:
        await db.dispose()
