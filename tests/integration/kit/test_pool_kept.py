"""A service's pool (doorward_kit.db.Database with max_overflow=0, as every service opens it)
keeps every connection it opens, up to its size, and opens none beyond it: a burst past the
size waits for a connection instead of starting PostgreSQL backends that close on return."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from doorward_kit.db import Database

pytestmark = pytest.mark.integration


async def _backends(db: Database) -> set[int]:
    async with db.reads() as session:
        rows = await session.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        return {int(r[0]) for r in rows}


async def _burst(db: Database, width: int, held: asyncio.Event) -> None:
    async def hold() -> None:
        async with db.reads() as session:
            await session.execute(text("SELECT 1"))
            await held.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(width)]
    await asyncio.sleep(0.3)  # every task that can get a connection has one
    held.set()
    await asyncio.gather(*tasks)


async def test_a_burst_past_the_size_waits_and_keeps_what_it_opened(postgres: Any) -> None:
    db = Database(postgres.fresh_database("poolkept"), pool_size=3, max_overflow=0)
    try:
        held = asyncio.Event()
        burst = asyncio.create_task(_burst(db, 5, held))
        await asyncio.sleep(0.2)
        pool = db.engine.sync_engine.pool
        assert pool.checkedout() == 3  # type: ignore[attr-defined]  # two wait
        await burst
        assert pool.checkedin() == 3  # type: ignore[attr-defined]  # all kept
        before = await _backends(db)
        await _burst(db, 5, asyncio.Event())  # the same three backends serve the next burst
        assert await _backends(db) == before
    finally:
        await db.dispose()


async def test_the_default_still_opens_as_many_again_and_closes_them(postgres: Any) -> None:
    # Tools open a Database of one or two connections and keep the old meaning.
    db = Database(postgres.fresh_database("pooloverflow"), pool_size=1)
    try:
        held = asyncio.Event()
        burst = asyncio.create_task(_burst(db, 2, held))
        await asyncio.sleep(0.2)
        assert db.engine.sync_engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        await burst
        assert db.engine.sync_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    finally:
        await db.dispose()
