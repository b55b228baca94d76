"""Session changes reach the watchers of every identity replica (LISTEN/NOTIFY on the real
PostgreSQL), and a replica that stops hearing them drops its watchers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest
import pytest_asyncio

from services.identity.session_bus import APP_PREFIX, CHANGES, SessionBus, asyncpg_dsn
from services.identity.session_hub import SessionChange, SessionHub, Watcher

pytestmark = pytest.mark.integration


@dataclass
class Replica:
    hub: SessionHub
    bus: SessionBus
    task: asyncio.Task[None]
    seen: list[SessionChange] = field(default_factory=list)


async def _until(check: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def _acking(replica: Replica, watcher: Watcher) -> asyncio.Task[None]:
    """A well-behaved watcher (a session guard): records each change, then acks it."""

    async def run() -> None:
        while (item := await watcher.queue.get()) is not None:
            event_id, change = item
            replica.seen.append(change)
            replica.hub.ack(watcher, event_id)

    return asyncio.get_running_loop().create_task(run())


@pytest_asyncio.fixture
async def replicas(postgres: object) -> AsyncIterator[list[Replica]]:
    url = postgres.fresh_database("bus")  # type: ignore[attr-defined]
    found: list[Replica] = []
    for _ in range(3):
        hub = SessionHub()
        bus = SessionBus(asyncpg_dsn(url), hub, ack_seconds=2.0)
        task = asyncio.get_running_loop().create_task(bus.run())
        found.append(Replica(hub, bus, task))
    await _until(lambda: all(r.bus.listening for r in found))
    try:
        yield found
    finally:
        for r in found:
            r.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r.task


async def test_a_change_on_one_replica_reaches_the_watchers_of_every_replica(
    replicas: list[Replica],
) -> None:
    a, b, c = replicas
    watchers = [_acking(r, r.hub.register(f"guard-{i}")) for i, r in enumerate(replicas)]
    change = SessionChange(user_id="u1", org_id="o1", epoch=3, deactivated=True)
    # Returns once every watcher on every replica has acked.
    assert await a.bus.publish(change) is True
    assert a.seen == [change] and b.seen == [change] and c.seen == [change]
    for task in watchers:
        task.cancel()


async def test_a_replica_that_cannot_listen_drops_its_watchers_and_refuses_until_it_hears_again(
    replicas: list[Replica], postgres: object
) -> None:
    a, b, _ = replicas
    watcher = b.hub.register("guard-on-b")
    # Cut b's listening connection from the server side (as a PostgreSQL restart would).
    admin = await asyncpg.connect(postgres.admin_url())  # type: ignore[attr-defined]
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            APP_PREFIX + b.bus.replica_id,
        )
    finally:
        await admin.close()
    await _until(lambda: not b.bus.listening or b.hub.watcher_count == 0)
    # The guard's stream ends: its cache goes with it, it asks CheckSession meanwhile.
    assert await asyncio.wait_for(watcher.queue.get(), 5) is None
    assert b.hub.watcher_count == 0
    # b listens again by itself, and changes reach its new watchers.
    await _until(lambda: b.bus.listening)
    _acking(b, b.hub.register("guard-again"))
    change = SessionChange(user_id="u2", org_id="o1", epoch=1, session_id="s9")
    assert await a.bus.publish(change) is True
    assert b.seen == [change]


async def test_a_replica_that_does_not_ack_in_time_makes_publish_report_it(
    replicas: list[Replica],
) -> None:
    """A hung replica (listening, never answering) cannot make deactivateUser wait forever."""
    a, b, c = replicas
    c.task.cancel()  # stops listening: no longer expected
    with contextlib.suppress(asyncio.CancelledError):
        await c.task
    # b stays connected (so it is expected) but stops hearing changes: it never acks.
    assert b.bus._conn is not None
    async with b.bus._querying:  # not while b's liveness probe has a query in flight
        await b.bus._conn.remove_listener(CHANGES, b.bus._on_change)
    started = asyncio.get_running_loop().time()
    assert await a.bus.publish(SessionChange(user_id="u3", org_id="o1", epoch=2)) is False
    assert asyncio.get_running_loop().time() - started < 4.0
