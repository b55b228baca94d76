"""The outbox sender coalesces a busy outbox into fewer passes without losing or doubling an
event: a pass starts at most every `coalesce` seconds while events keep coming, at once after a
quiet spell; a crash between the locked select and the delete sends the rows again, and the
real audit service keeps one of each."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from opentelemetry import trace
from sqlalchemy import func, select
from sqlalchemy.orm import DeclarativeBase

from doorward_kit.audit_client import (
    AuditOutboxMixin,
    AuditRecord,
    OutboxSender,
    Outcome,
    record_event,
)
from doorward_kit.db import Database, new_metadata
from doorward_kit.grpc import ServiceChannel
from doorward_kit.net import free_port
from doorward_kit.span_policy import filter_attributes
from tests.fixtures.spans import memory_spans
from tests.integration.audit.harness import PRODUCER, running_audit
from tests.integration.audit.test_outbox_sender import FakeAudit, _server

pytestmark = pytest.mark.integration


class Base(DeclarativeBase):
    metadata = new_metadata()


class AuditOutbox(AuditOutboxMixin, Base):
    __tablename__ = "audit_outbox"


class Crash(Exception):
    """The process dies after audit has committed the batch, before the outbox forgets it."""


def _record(org_id: str = "org-1") -> AuditRecord:
    return AuditRecord(
        org_id=org_id,
        actor_id=str(uuid.uuid4()),
        action="workorder.update",
        outcome=Outcome.ALLOWED,
        target_type="WorkOrder",
        target_id=str(uuid.uuid4()),
    )


@pytest.fixture
async def db(postgres):
    database = Database(postgres.fresh_database("coalesce"))
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


async def _pending(db: Database) -> int:
    async with db.unit_of_work() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditOutbox)) or 0)


async def _commit_one(db: Database) -> AuditRecord:
    """One request's answer: its event committed in its own transaction (waking the sender)."""
    record = _record()
    async with db.unit_of_work() as session:
        await record_event(session, AuditOutbox, record)
    return record


async def _until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


@asynccontextmanager
async def _fake_audit(
    service_pki, fail: int = 0
) -> AsyncIterator[tuple[FakeAudit, ServiceChannel]]:
    """A stand-in audit server (refusing the first `fail` calls) and a channel to it."""
    port = free_port()
    fake = FakeAudit(fail=fail)
    server = await _server(fake, port, service_pki)
    channel = ServiceChannel(f"127.0.0.1:{port}", service_pki.auth(PRODUCER), server="audit")
    try:
        yield fake, channel
    finally:
        await channel.close()
        await server.stop(0)


@asynccontextmanager
async def _running(sender: OutboxSender) -> AsyncIterator[asyncio.Task[None]]:
    """The sender's loop, cancelled (and seen to stop) at the end."""
    task = asyncio.create_task(sender.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_busy_outbox_goes_in_one_pass_and_a_lone_event_at_once(db, service_pki):
    async with _fake_audit(service_pki) as (fake, channel):
        # A long interval makes the coalescing plain to see (the default is 50 ms).
        sender = OutboxSender(db, AuditOutbox, channel, PRODUCER, poll_interval=30.0, coalesce=3.0)
        async with _running(sender) as task:
            await _until(lambda: _is(fake.calls == 0 and task.done() is False))
            # After a quiet spell: delivered at once, not after the coalescing interval.
            started = time.monotonic()
            lone = await _commit_one(db)
            await _until(lambda: _is(lone.id in fake.seen), timeout=2.5)
            assert time.monotonic() - started < 2.5
            calls_after_lone = fake.calls
            # Twenty requests answered right after it, each committing and waking the sender: the
            # rest of the interval is waited out and all twenty go in one pass (one call, since
            # they carry no trace), none lost, none twice.
            busy = [await _commit_one(db) for _ in range(20)]
            await _until(lambda: _is(all(r.id in fake.seen for r in busy)), timeout=15.0)
            await _until(lambda: _pending_is(db, 0))
            assert fake.calls - calls_after_lone <= 2, fake.calls  # 1, or 2 if the machine crawled
            assert len(fake.seen) == 21


async def test_without_coalescing_every_wake_up_is_a_pass(db, service_pki):
    """coalesce=0 is the old behaviour: the honest comparison for the coalesced one."""
    async with _fake_audit(service_pki) as (fake, channel):
        sender = OutboxSender(db, AuditOutbox, channel, PRODUCER, poll_interval=30.0, coalesce=0.0)
        async with _running(sender):
            for _ in range(3):
                record = await _commit_one(db)
                await _until(lambda r=record: _is(r.id in fake.seen), timeout=5.0)
            assert fake.calls == 3


async def test_a_crash_between_select_and_delete_redelivers_and_audit_keeps_one(
    db, postgres, service_pki
):
    async with running_audit(postgres, pki=service_pki) as audit:
        records = [await _commit_one(db) for _ in range(5)]
        crashing = OutboxSender(db, AuditOutbox, audit.channel, PRODUCER)
        send = crashing._send

        async def send_then_crash(events):
            await send(events)  # audit has committed them ...
            raise Crash  # ... and the process dies before the delete commits

        crashing._send = send_then_crash  # type: ignore[method-assign]
        with pytest.raises(Crash):
            await crashing.deliver_once()
        assert await _pending(db) == 5  # nothing forgotten: the transaction never committed

        # The restarted process (a new sender) finds the rows due and unlocked, sends them
        # again; audit recognises every id and stores none twice.
        restarted = OutboxSender(db, AuditOutbox, audit.channel, PRODUCER)
        assert await restarted.deliver_once() == 5
        assert await _pending(db) == 0
        conn = await audit.superuser()
        try:
            stored = await conn.fetch(
                "SELECT id, count(*) AS n FROM audit_events WHERE id = ANY($1) GROUP BY id",
                [r.id for r in records],
            )
        finally:
            await conn.close()
        assert {row["id"]: row["n"] for row in stored} == {r.id: 1 for r in records}


async def test_a_failed_delivery_is_retried_later_by_the_prepared_update(db, service_pki):
    """The failure path's array-parameter update: the rows get an attempt and a later time."""
    async with _fake_audit(service_pki, fail=1) as (fake, channel):
        # A retry waits 0.5 to 1 s (jitter): "not due yet" holds on a loaded machine too.
        sender = OutboxSender(db, AuditOutbox, channel, PRODUCER, backoff_base=1.0, backoff_cap=1.0)
        records = [await _commit_one(db) for _ in range(3)]
        assert await sender.deliver_once() == 0
        async with db.unit_of_work() as session:
            rows = (
                await session.execute(
                    select(
                        AuditOutbox.attempts, AuditOutbox.next_attempt_at > func.now()
                    ).select_from(AuditOutbox)
                )
            ).all()
        assert [tuple(r) for r in rows] == [(1, True)] * 3
        assert await sender.deliver_once() == 0  # not due yet
        await asyncio.sleep(1.05)
        assert await sender.deliver_once() == 3
        assert set(fake.seen) == {r.id for r in records}


async def _is(value: bool) -> bool:
    return value


async def _pending_is(db: Database, n: int) -> bool:
    return await _pending(db) == n


async def test_a_pass_of_many_traces_is_one_call_with_a_delivery_span_in_each(db, service_pki):
    """Twelve requests, each in a trace of its own, coalesced into one pass: one AppendEvents
    call (not one per trace, queueing on audit's head lock), and every trace still shows the
    audit write: a `doorward.audit.deliver` span, a child of the span that recorded its event."""
    spans = memory_spans("outbox-tests")
    tracer = trace.get_tracer("outbox-tests")
    producers: dict[str, str] = {}  # trace id -> the recording span's id
    async with db.unit_of_work() as session:  # one transaction: one wake-up, one pass
        for _ in range(12):
            with tracer.start_as_current_span("request") as span:
                context = span.get_span_context()
                producers[format(context.trace_id, "032x")] = format(context.span_id, "016x")
                await record_event(session, AuditOutbox, _record())
    async with _fake_audit(service_pki) as (fake, channel):
        sender = OutboxSender(db, AuditOutbox, channel, PRODUCER, poll_interval=30.0, coalesce=3.0)
        async with _running(sender):
            await _until(lambda: _pending_is(db, 0))
            assert fake.calls == 1 and len(fake.seen) == 12
            delivered = [
                s
                for s in spans.get_finished_spans()
                if s.name == "doorward.audit.deliver"
                and format(s.context.trace_id, "032x") in producers
            ]
            assert len(delivered) == 12
            seen = {
                format(s.context.trace_id, "032x"): format(s.parent.span_id, "016x")
                for s in delivered
                if s.parent is not None
            }
            assert seen == producers
            # the count survives the exporter's allow-list (what the trace store keeps)
            assert all(
                filter_attributes(s.attributes)["doorward.audit.events"] == 12 for s in delivered
            )
