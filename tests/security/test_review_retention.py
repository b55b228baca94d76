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


# ---- legal holds keep their audit trail ---------------------------------------------------


async def test_audit_pruning_stops_before_the_first_event_about_a_held_record(postgres) -> None:
    """auditEventDays may be as short as 183 days: the trail of a work order under litigation
    hold must not go with it. The prefix ends right before the first held event; the rest
    still verifies."""
    from datetime import UTC, datetime, timedelta

    from tests.integration.audit.harness import record, running_audit

    now = datetime.now(UTC)
    held, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with running_audit(postgres) as audit:
        org = "org-held-prune"
        old = now - 2 * 365 * timedelta(days=1)
        await audit.append(
            [
                record(org, occurred_at=old, work_order_id=other),
                record(org, occurred_at=old, work_order_id=other),
                record(org, occurred_at=old, work_order_id=held),  # seq 3: held
                record(org, occurred_at=old, target_type="WorkOrder", target_id=other),
            ]
        )
        async with audit.runtime.db.unit_of_work() as session:
            result = await audit.runtime.service.prune_org(
                session, org, now - timedelta(days=183), held_ids=[held]
            )
        assert (result.through, result.deleted) == (2, 2)
        async with audit.runtime.db.unit_of_work() as session:
            report, _ = await audit.runtime.service.verify_org(session, org)
        assert report.ok
        # Honest use: with the hold released the rest goes at the next run.
        async with audit.runtime.db.unit_of_work() as session:
            result = await audit.runtime.service.prune_org(session, org, now - timedelta(days=183))
        assert result.through == 4


async def test_the_purge_hands_audit_every_id_a_hold_covers(db: Database) -> None:
    w = World(str(uuid.uuid4()))
    customer = w.customer(age=8 * YEAR)
    site = w.site(customer)
    job = w.job(site, finished_ago=7 * YEAR)
    other_customer = w.customer(age=8 * YEAR)
    other_site = w.site(other_customer)
    other_job = w.job(other_site, finished_ago=1 * YEAR)
    await _add(db, customer, site, other_customer, other_site)
    await _add(db, job, other_job)
    await _add(db, w.hold("WORK_ORDER", job.id))
    asked: dict[str, list[str]] = {}

    async def prune(org_id: str, before: Any, held: Any = ()) -> int:
        asked[org_id] = list(held)
        return 0

    await Purge(db, clock=lambda: NOW, prune_audit=prune).run_once()
    assert set(asked[w.org_id]) == {job.id, site.id, customer.id}
    async with db.unit_of_work() as session:
        assert set(await Repository(session).held_ids(w.org_id)) == {job.id, site.id, customer.id}
        session.add(w.hold("CUSTOMER", other_customer.id))
    async with db.unit_of_work() as session:
        covered = set(await Repository(session).held_ids(w.org_id))
    assert {other_customer.id, other_site.id, other_job.id} <= covered
