"""doorward_kit.db: what a session costs in round trips, and that a dead pooled connection is
never handed out (the pool's own per-checkout ping was three round trips on every session)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from doorward_kit.db import Database

pytestmark = pytest.mark.integration


@contextmanager
def round_trips() -> Iterator[list[str]]:
    """Every simple-protocol statement asyncpg sends (BEGIN, COMMIT, ROLLBACK, pings)."""
    sent: list[str] = []
    execute, fetchrow = asyncpg.Connection.execute, asyncpg.Connection.fetchrow

    async def counted_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query)
        return await execute(self, query, *args, **kwargs)

    async def counted_fetchrow(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query)
        return await fetchrow(self, query, *args, **kwargs)

    asyncpg.Connection.execute = counted_execute
    asyncpg.Connection.fetchrow = counted_fetchrow
    try:
        yield sent
    finally:
        asyncpg.Connection.execute = execute
        asyncpg.Connection.fetchrow = fetchrow


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
        with round_trips() as sent:
            async with db.reads() as session:
                assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
        assert not any(s.strip(";").split()[0].upper() in ("BEGIN", "COMMIT") for s in sent if s)
        assert ";" not in sent  # no ping
        with round_trips() as sent:
            async with db.unit_of_work() as session:
                await session.execute(text("SELECT 3"))
        assert [s.split()[0].strip(";").upper() for s in sent] == ["BEGIN", "COMMIT"]
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
