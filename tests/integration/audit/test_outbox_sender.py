"""OutboxSender against real PostgreSQL and a real gRPC server standing in for audit."""

import asyncio
import uuid
from contextlib import asynccontextmanager

import grpc
import pytest
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from sqlalchemy import event, func, select
from sqlalchemy.orm import DeclarativeBase

from doorward_kit.audit_client import (
    AuditClient,
    AuditOutboxMixin,
    AuditRecord,
    OutboxBatch,
    OutboxSender,
    Outcome,
    record_event,
)
from doorward_kit.db import Database, new_metadata
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import GrpcServer, ServiceChannel
from doorward_kit.net import free_port
from services.audit.api.grpc import ALLOWED_CALLERS as AUDIT_CALLERS

pytestmark = pytest.mark.integration

PRODUCER = "workorders"


class Base(DeclarativeBase):
    metadata = new_metadata()


class AuditOutbox(AuditOutboxMixin, Base):
    __tablename__ = "audit_outbox"


class FakeAudit(audit_pb2_grpc.AuditServicer):
    def __init__(self, fail: int = 0) -> None:
        self.seen: dict[str, audit_pb2.AuditEvent] = {}
        self.calls = 0
        self.fail = fail

    async def AppendEvents(self, request, context):
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
        new = 0
        for ev in request.events:
            if ev.id not in self.seen:
                self.seen[ev.id] = ev
                new += 1
        return audit_pb2.AppendEventsResponse(accepted=new, duplicates=len(request.events) - new)


async def _server(servicer, port, pki):
    server = GrpcServer("127.0.0.1", port, pki.auth("audit"))
    audit_pb2_grpc.add_AuditServicer_to_server(servicer, server.server)
    server.allow(AUDIT_CALLERS)
    await server.start()
    return server


def _record(i: int = 0) -> AuditRecord:
    return AuditRecord(
        org_id="org-1",
        actor_id=str(uuid.uuid4()),
        action="workorder.create",
        outcome=Outcome.ALLOWED,
        target_type="WorkOrder",
        target_id=f"w-{i}",
        details={"count": i},
    )


@pytest.fixture
async def db(postgres):
    database = Database(postgres.fresh_database("outbox"))
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


async def _pending(db) -> int:
    async with db.unit_of_work() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditOutbox)) or 0)


@asynccontextmanager
async def _sender_running(db, service_pki, fake, poll_interval):
    """A stand-in audit on a free port and PRODUCER's outbox sender running against it; both
    stopped on the way out."""
    port = free_port()
    server = await _server(fake, port, service_pki)
    channel = ServiceChannel(f"127.0.0.1:{port}", service_pki.auth(PRODUCER), server="audit")
    sender = OutboxSender(db, AuditOutbox, channel, PRODUCER, poll_interval=poll_interval)
    task = asyncio.create_task(sender.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await channel.close()
        await server.stop(0)


async def _until(predicate, timeout=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_sender_delivers_committed_events_and_forgets_rolled_back_ones(db, service_pki):
    fake = FakeAudit()
    async with _sender_running(db, service_pki, fake, poll_interval=5.0):
        kept = _record(1)
        async with db.unit_of_work() as session:
            await record_event(session, AuditOutbox, kept)
        with pytest.raises(RuntimeError):
            async with db.unit_of_work() as session:
                await record_event(session, AuditOutbox, _record(2))
                raise RuntimeError("the change failed")
        # Woken by the commit, not by the (long) poll interval.
        await _until(lambda: _async(len(fake.seen) == 1), timeout=3.0)
        assert set(fake.seen) == {kept.id}
        assert fake.seen[kept.id].service == PRODUCER
        await _until(lambda: _async_pending_zero(db))


async def _async(value):
    return value


async def _async_pending_zero(db):
    return await _pending(db) == 0


async def test_sender_retries_with_backoff_until_audit_takes_them(db, service_pki):
    fake = FakeAudit(fail=2)
    records = [_record(i) for i in range(450)]
    async with db.unit_of_work() as session:
        for r in records:
            await record_event(session, AuditOutbox, r)
    async with _sender_running(db, service_pki, fake, poll_interval=0.05):
        await _until(lambda: _async_pending_zero(db), timeout=15.0)
        assert set(fake.seen) == {r.id for r in records}
        assert fake.calls >= 2 + 3  # two refusals, then batches of at most 200


async def test_audit_client_fails_closed(service_pki):
    port = free_port()  # nobody listens here
    channel = ServiceChannel(f"127.0.0.1:{port}", service_pki.auth(PRODUCER), server="audit")
    try:
        with pytest.raises(DoorwardError) as caught:
            await AuditClient(channel, deadline=0.5).append([_record()])
        assert caught.value.code is ErrorCode.UNAVAILABLE
        assert caught.value.message == "the audit trail cannot take the event"
    finally:
        await channel.close()


async def test_audit_client_appends_when_audit_is_up(service_pki):
    port = free_port()
    fake = FakeAudit()
    server = await _server(fake, port, service_pki)
    channel = ServiceChannel(f"127.0.0.1:{port}", service_pki.auth(PRODUCER), server="audit")
    try:
        record = _record()
        await AuditClient(channel, service_name=PRODUCER).append([record])
        await AuditClient(channel, service_name=PRODUCER).append([record])  # a retry
        assert list(fake.seen) == [record.id]
        assert fake.seen[record.id].service == PRODUCER
    finally:
        await channel.close()
        await server.stop(0)


async def test_replicas_sharing_an_outbox_send_each_event_once(db, service_pki):
    """Three replicas of a service run a sender over the same outbox table: every event reaches
    audit exactly once (SKIP LOCKED hands each row to one sender), none is sent twice."""
    port = free_port()
    fake = FakeAudit()
    received: list[str] = []
    append = fake.AppendEvents

    async def counting(request, context):
        received.extend(ev.id for ev in request.events)
        return await append(request, context)

    fake.AppendEvents = counting  # type: ignore[method-assign]
    server = await _server(fake, port, service_pki)
    channel = ServiceChannel(f"127.0.0.1:{port}", service_pki.auth(PRODUCER), server="audit")
    async with db.unit_of_work() as session:
        for i in range(300):
            await record_event(session, AuditOutbox, _record(i))
    senders = [
        OutboxSender(db, AuditOutbox, channel, PRODUCER, batch_size=10, poll_interval=0.05)
        for _ in range(3)
    ]
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        await _until(lambda: _async_pending_zero(db), timeout=30.0)
        assert len(received) == 300 and len(set(received)) == 300
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close()
        await server.stop(0)


async def test_a_request_batch_is_one_insert_that_wakes_the_sender(db, service_pki):
    """A request's events (OutboxBatch: workorders' board reads) go to the outbox in one raw
    INSERT, committed at once, and wake the sender as a unit of work's commit does; a dropped
    batch (the request failed) writes nothing."""
    fake = FakeAudit()
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    async with _sender_running(db, service_pki, fake, poll_interval=5.0):
        await asyncio.sleep(0.1)  # the sender's first pass (nothing due) is behind it
        dropped = OutboxBatch(AuditOutbox)
        await record_event(dropped, AuditOutbox, _record(0))
        dropped.drop()
        batch = OutboxBatch(AuditOutbox)
        records = [_record(i) for i in range(1, 4)]
        for r in records:
            await record_event(batch, AuditOutbox, r)
        assert len(batch) == 3
        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        try:
            async with db.raw_reads() as raw:
                await dropped.write(raw)
                await batch.write(raw)
                await batch.write(raw)  # nothing new: nothing sent
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        assert [s.split(" (")[0] for s in statements] == ["INSERT INTO audit_outbox"]
        # Woken by the write, not by the (long) poll interval.
        await _until(lambda: _async(len(fake.seen) == 3), timeout=3.0)
        assert set(fake.seen) == {r.id for r in records}
        await _until(lambda: _async_pending_zero(db))
