"""doorward_kit.db: what a session costs in round trips, and that a dead pooled connection is
never handed out (the pool's own per-checkout ping was three round trips on every session)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from doorward_kit.db import Database
from tests.fixtures.round_trips import keywords, simple_statements

pytestmark = pytest.mark.integration


async def _backend_pids(db: Database) -> set[int]:
    async with db.reads() as session:
        return {int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())}


async def test_reads_send_no_transaction_and_a_busy_connection_is_not_pinged(
    postgres: Any,
) -> None:
    db = Database(postgres.fresh_database("dbrt"), ping_after_idle=60)
    try:
        async with db.unit_of_work() as session:  # the first checkout is pinged
            await session.execute(text("SELECT 1"))
        with simple_statements(db.engine) as sent:
            async with db.reads() as session:
                assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
        assert sent == []  # no ping, no BEGIN, no COMMIT: the query is all
        with simple_statements(db.engine) as sent:
            async with db.unit_of_work() as session:
                await session.execute(text("SELECT 3"))
        assert keywords(sent) == ["BEGIN", "COMMIT"]
    finally:
        await db.dispose()


async def test_a_connection_ended_while_pooled_is_never_handed_out(postgres: Any) -> None:
    db = Database(postgres.fresh_database("dbdead"), ping_after_idle=0.2)
    admin = await asyncpg.connect(postgres.admin_url())
    try:
        first = await _backend_pids(db)
        # The server ends the pooled connection (a restart, an administrator) while it sits
        # in the pool for longer than the ping threshold: whether asyncpg saw the goodbye
        # (closed socket, no round trip) or the ping finds out, the caller gets a new one.
        await admin.execute("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) p", list(first))
        await asyncio.sleep(0.3)
        second = await _backend_pids(db)
        assert second and second != first
        # A live connection idle past the threshold passes its ping and is reused.
        await asyncio.sleep(0.3)
        assert await _backend_pids(db) == second
    finally:
        await admin.close()
        await db.dispose()


async def test_the_connection_returned_last_is_handed_out_next(postgres: Any) -> None:
    """After a burst opened several connections, a trickle of requests keeps reusing the one
    returned last (LIFO): it stays warm (no ping, its statements prepared) while the others
    idle. First in, first out rotated through them all, and at a request every 0.1 s each
    then sat idle past the threshold and was pinged (BEGIN, ';', ROLLBACK) at every checkout."""
    db = Database(postgres.fresh_database("dblifo"), ping_after_idle=0.25)
    try:

        async def hold() -> int:
            async with db.raw_reads() as raw:
                pid = await raw.fetchrow("SELECT pg_backend_pid()")
                await asyncio.sleep(0.05)
                return int(pid[0]) if pid else 0

        burst = set(await asyncio.gather(*(hold() for _ in range(4))))
        assert len(burst) == 4
        used: set[int] = set()
        with simple_statements(db.engine) as sent:
            for _ in range(8):
                used.add(await hold())
                await asyncio.sleep(0.1)
        assert len(used) == 1 and used <= burst
        assert sent == []  # the warm connection is never idle long enough to be pinged
    finally:
        await db.dispose()
