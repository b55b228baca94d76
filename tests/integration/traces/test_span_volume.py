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
        inside = [s for s in spans.get_finished_spans() if s.name != "job"]
        # the three statements, each a child of the job, and no pool checkout span
        assert [s.name.split()[0] for s in inside] == ["SELECT"] * 3, [s.name for s in inside]
        assert all(s.parent is not None for s in inside)
        assert {s.parent.span_id for s in inside if s.parent} == {job.get_span_context().span_id}
        assert all(s.context.trace_id == job.get_span_context().trace_id for s in inside)
        assert (inside[0].attributes or {}).get("db.system") == "postgresql"

        spans.clear()
        # A background poll: no request, job or decision above it.
        async with db.unit_of_work() as session:
            await session.execute(text("SELECT 4"))
        async with db.reads() as session:
            await session.execute(text("SELECT 5"))
        assert spans.get_finished_spans() == ()

        # a Database made later (its engine instrumented by the wrapper) behaves alike
        other = Database(postgres.fresh_database("spanvol2"))
        try:
            spans.clear()
            async with other.reads() as session:
                await session.execute(text("SELECT 6"))
            with tracer.start_as_current_span("request"):
                async with other.reads() as session:
                    await session.execute(text("SELECT 7"))
            names = [s.name.split()[0] for s in spans.get_finished_spans()]
            assert names == ["SELECT", "request"], names
        finally:
            await other.dispose()
    finally:
        await db.dispose()
