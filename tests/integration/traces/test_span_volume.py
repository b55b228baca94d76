"""Which database spans a Doorward process makes (doorward_kit.telemetry.instrument_engine):
every statement of a request, job or decision is in its trace, as a child of the span that ran
it; a statement nothing encloses (a background poll) makes no trace of its own; and a session's
pool checkout makes no `connect` span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from doorward_kit.db import Database
from tests.fixtures.spans import memory_spans

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """One in-memory exporter on the process's provider (added once), emptied per test."""
    yield memory_spans("traces-tests")


def _spans_of(spans: InMemorySpanExporter, *statements: str) -> list[Any]:
    """The finished spans of these statements (by their text), whoever else is tracing."""
    return [
        s
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get("db.statement") in statements
    ]


async def test_statements_are_spans_of_their_trace_and_nothing_else_is(
    postgres: Any, spans: InMemorySpanExporter
) -> None:
    db = Database(postgres.fresh_database("spanvol"))
    tracer = trace.get_tracer("test")
    try:
        async with db.unit_of_work() as session:  # warm: the pool's first connection
            await session.execute(text("SELECT 0"))
        spans.clear()
        with tracer.start_as_current_span("job") as job:
            async with db.unit_of_work() as session:
                await session.execute(text("SELECT 1"))
                await session.execute(text("SELECT 2"))
            async with db.reads() as session:
                await session.execute(text("SELECT 3"))
        # This job's trace only: services other tests left running in the shared loop trace too.
        ours = job.get_span_context().trace_id
        inside = [
            s
            for s in spans.get_finished_spans()
            if s.context.trace_id == ours and s.name != "job"
        ]
        # the three statements, each a child of the job, and no pool checkout span
        assert [s.name.split()[0] for s in inside] == ["SELECT"] * 3, [s.name for s in inside]
        assert all(s.parent is not None for s in inside)
        assert {s.parent.span_id for s in inside if s.parent} == {job.get_span_context().span_id}
        assert all(s.context.trace_id == job.get_span_context().trace_id for s in inside)
        assert (inside[0].attributes or {}).get("db.system") == "postgresql"
        # What _spans_of reads below: the statement's own text.
        assert len(_spans_of(spans, "SELECT 1", "SELECT 2", "SELECT 3")) == 3

        spans.clear()
        # A background poll: no request, job or decision above it.
        async with db.unit_of_work() as session:
            await session.execute(text("SELECT 4"))
        async with db.reads() as session:
            await session.execute(text("SELECT 5"))
        assert not _spans_of(spans, "SELECT 4", "SELECT 5")

        # a Database made later (its engine instrumented by the wrapper) behaves alike
        other = Database(postgres.fresh_database("spanvol2"))
        try:
            spans.clear()
            async with other.reads() as session:
                await session.execute(text("SELECT 6"))
            with tracer.start_as_current_span("request") as request:
                async with other.reads() as session:
                    await session.execute(text("SELECT 7"))
            assert not _spans_of(spans, "SELECT 6")
            ours = request.get_span_context().trace_id
            names = [
                s.name.split()[0]
                for s in spans.get_finished_spans()
                if s.context.trace_id == ours
            ]
            assert names == ["SELECT", "request"], names
            assert len(_spans_of(spans, "SELECT 7")) == 1
        finally:
            await other.dispose()
    finally:
        await db.dispose()


async def test_connection_usage_is_read_from_the_pool_not_counted_per_checkout(
    postgres: Any,
) -> None:
    """`db.client.connections.usage` comes from the pool when metrics are collected: a checkout
    runs none of the instrumentation's listeners (an UpDownCounter.add cost ~20 us each, four
    per checkout and checkin)."""
    from sqlalchemy import event

    from doorward_kit.telemetry import _USAGE_SOURCES, _connection_usage

    db = Database(postgres.fresh_database("spanusage"))

    mine = next(a for ref, a in _USAGE_SOURCES if ref() is db.engine.sync_engine)

    def usage() -> dict[str, int]:
        found: dict[str, int] = {}
        for observation in _connection_usage(None):
            attributes = dict(observation.attributes or {})
            state = attributes.pop("state")
            if attributes == mine:
                found[str(state)] = int(observation.value)
        return found

    try:
        for identifier in ("checkout", "checkin", "connect", "close"):
            assert not event.contains(db.engine.sync_engine, identifier, lambda *a: None)
        listeners = db.engine.sync_engine.pool.dispatch.checkout
        assert not any("EngineTracer" in getattr(fn, "__qualname__", "") for fn in listeners)
        async with db.reads() as session:
            await session.execute(text("SELECT 1"))
            assert usage()["used"] >= 1
        assert usage()["used"] == 0
        assert usage()["idle"] >= 1
    finally:
        await db.dispose()
