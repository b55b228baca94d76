"""Review of the retention purge (issue 14): a legal hold placed while a purge batch runs is
honoured. The batch had already evaluated "no hold" for the rows it locked; without a lock on
the placing side, placeLegalHold was acknowledged for rows the batch then deleted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from doorward_kit.db import Database, run_migrations_async
from services.workorders.__main__ import MIGRATIONS
from services.workorders.models import Customer, WorkOrder
from services.workorders.purge import Purge
from services.workorders.repository import Repository
from tests.integration.workorders.test_purge import NOW, YEAR, World, _add, _exists

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def db(postgres: Any) -> AsyncIterator[Database]:
    url = postgres.fresh_database("review_hold")
    await run_migrations_async(MIGRATIONS, url)
    database = Database(url, pool_size=4)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.mark.parametrize("kind", ["WORK_ORDER", "SITE", "CUSTOMER"])
async def test_a_hold_being_placed_is_never_purged_under_it(db: Database, kind: str) -> None:
    w = World(str(uuid.uuid4()))
    customer = w.customer(age=8 * YEAR)
    site = w.site(customer)
    job = w.job(site, finished_ago=7 * YEAR)
    await _add(db, customer, site)
    await _add(db, job)
    target = {"WORK_ORDER": job.id, "SITE": site.id, "CUSTOMER": customer.id}[kind]

    # An administrator's placeLegalHold is under way (its transaction holds the cover lock)
    # when a purge run starts; the hold commits after the run.
    async with db.unit_of_work() as session:
        await Repository(session).lock_hold_cover(w.org_id, kind, target)
        result = await asyncio.wait_for(Purge(db, clock=lambda: NOW).run_once(), 30)
        assert result.ran
        assert await _exists(db, WorkOrder, job.id)
        session.add(w.hold(kind, target))

    # The next run sees the committed hold: the job and the contact data stay.
    await Purge(db, clock=lambda: NOW).run_once()
    assert await _exists(db, WorkOrder, job.id)
    async with db.unit_of_work() as session:
        row = await session.get(Customer, customer.id)
        assert row is not None and row.erased_at is None and row.contact is not None


async def test_without_a_hold_the_same_rows_are_purged(db: Database) -> None:
    w = World(str(uuid.uuid4()))
    customer = w.customer(age=8 * YEAR)
    site = w.site(customer)
    job = w.job(site, finished_ago=7 * YEAR)
    await _add(db, customer, site)
    await _add(db, job)
    await Purge(db, clock=lambda: NOW).run_once()
    assert not await _exists(db, WorkOrder, job.id)
    async with db.unit_of_work() as session:
        row = await session.get(Customer, customer.id)
        assert row is not None and row.erased_at is not None
