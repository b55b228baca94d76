"""Issue 15, finding P4: when an identity replica's LISTEN connection dies, the session guards
streaming from it must stop trusting their caches at once, not after the bus's next probe.

The bus now drops its watchers from asyncpg's termination listener, the moment the connection
closes (here: pg_terminate_backend, as a PostgreSQL restart or failover does). The probe is made
slow in these tests, so only the termination listener can be what acts in time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from doorward_kit.auth import HttpJwksSource, TokenVerifier
from doorward_kit.grpc import ServiceChannel
from doorward_kit.session_guard import IdentitySessionGuard
from services.identity import session_bus
from services.identity.session_bus import APP_PREFIX, SessionBus, asyncpg_dsn
from services.identity.session_hub import SessionHub
from tests.integration.identity.conftest import create_staff, eventually

pytestmark = pytest.mark.integration


def slow_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes (and the loop's sleeps) 30 s apart: only the termination listener acts in time."""
    monkeypatch.setattr(session_bus, "PROBE_SECONDS", 30.0, raising=False)
    monkeypatch.setattr(session_bus, "RECONNECT_SECONDS", 30.0)


async def terminate_listener(postgres: Any, bus: SessionBus) -> None:
    admin = await asyncpg.connect(postgres.admin_url())
    try:
        killed = await admin.fetchval(
            "SELECT count(*) FROM ("
            " SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"
            ") AS t",
            APP_PREFIX + bus.replica_id,
        )
    finally:
        await admin.close()
    assert killed == 1


async def test_watchers_are_dropped_the_moment_the_listener_dies(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_probe(monkeypatch)
    hub = SessionHub()
    bus = SessionBus(asyncpg_dsn(postgres.fresh_database("busloss")), hub, ack_seconds=1.0)
    task = asyncio.get_running_loop().create_task(bus.run())
    try:
        await eventually(lambda: bus.listening, 10)
        await asyncio.sleep(0.1)  # the loop is now asleep in its (30 s) probe interval
        watcher = hub.register("guard")
        started = time.monotonic()
        await terminate_listener(postgres, bus)
        assert await asyncio.wait_for(watcher.queue.get(), 5) is None
        dropped_after = time.monotonic() - started
        assert not bus.listening and hub.watcher_count == 0
        assert dropped_after < 2, dropped_after
        # It listens again by itself, and only then takes watchers (a fresh connection).
        await eventually(lambda: bus.listening, 10)
        assert hub.register("guard-again") is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_guard_asks_the_database_while_identity_cannot_hear_other_replicas(
    running: Any, org: Any, service_pki: Any, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_probe(monkeypatch)
    bus = running.identity.bus
    assert bus is not None
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    guard = IdentitySessionGuard(
        ServiceChannel(running.grpc_target, service_pki.auth("gateway"), server="identity")
    )
    verifier = TokenVerifier(HttpJwksSource(running.http_url + "/.well-known/jwks.json"), guard)
    calls: list[int] = []
    real = guard._stub.CheckSession

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    guard._stub.CheckSession = counting
    try:
        await eventually(lambda: bus.listening, 10)
        await verifier.verify(staff.token)
        await eventually(lambda: guard.stream_live, 10)
        await verifier.verify(staff.token)
        before = len(calls)
        await verifier.verify(staff.token)
        assert len(calls) == before  # the honest case: a live stream, the cache is trusted
        # The listener dies, and PostgreSQL stays unreachable for it for a while: a change on
        # another replica could not reach this one now.
        real_connect, reachable = bus._connect, asyncio.Event()

        async def unreachable() -> Any:
            await reachable.wait()
            return await real_connect()

        monkeypatch.setattr(bus, "_connect", unreachable)
        await terminate_listener(postgres, bus)
        await eventually(lambda: not guard.stream_live, 5)
        await verifier.verify(staff.token)
        assert len(calls) == before + 1  # asked identity, which reads the database
        await verifier.verify(staff.token)
        assert len(calls) == before + 2  # ... every time, until the bus listens again
        assert not bus.listening
        # Back: the stream is live again and the cache trusted again.
        reachable.set()
        await eventually(lambda: bus.listening, 10)
        await eventually(lambda: guard.stream_live, 15)
        await verifier.verify(staff.token)
        settled = len(calls)
        await verifier.verify(staff.token)
        assert len(calls) == settled
    finally:
        await guard.close()
