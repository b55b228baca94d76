"""The retention purge against a PostgreSQL database of its own (the real migrations, rows
written directly), with a controlled clock: past retention the data is gone, held records stay,
the purge is idempotent, exactly one runner works at a time, and a run killed mid-way (an
exception after a committed batch, and a real SIGKILL of another process) is resumed by the
next run and finishes with the right counts. Audit events carry counts and ids only."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from doorward_kit.db import Database, run_migrations_async
from services.workorders.__main__ import MIGRATIONS
from services.workorders.models import (
    AuditOutbox,
    Customer,
    InvoiceLine,
    LegalHold,
    PurgeRun,
    RetentionPolicyRow,
    Site,
    WorkOrder,
)
from services.workorders.purge import Purge

pytestmark = pytest.mark.integration

NOW = datetime(2033, 3, 1, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)
ROOT = Path(__file__).resolve().parents[3]


@pytest_asyncio.fixture(loop_scope="session")
async def db(postgres: Any) -> AsyncIterator[Database]:
    url = postgres.fresh_database("purge")
    await run_migrations_async(MIGRATIONS, url)
    database = Database(url, pool_size=4)
    try:
        yield database
    finally:
        await database.dispose()


@dataclass
class World:
    org_id: str
    region: str = "r1"

    def customer(self, *, age: timedelta) -> Customer:
        return Customer(
            id=str(uuid.uuid4()),
            org_id=self.org_id,
            region_id=self.region,
            wrapped_key=b"wrapped",
            key_version=1,
            contact=b"dwc2-sealed-contact",
            created_at=NOW - age,
        )

    def site(self, customer: Customer) -> Site:
        return Site(
            id=str(uuid.uuid4()),
            org_id=self.org_id,
            customer_id=customer.id,
            region_id=self.region,
            address=b"dwc2-sealed-address",
            created_at=customer.created_at,
        )

    def job(self, site: Site, *, finished_ago: timedelta | None, status: str = "COMPLETED") -> Any:
        when = NOW - (finished_ago or timedelta(0))
        return WorkOrder(
            id=str(uuid.uuid4()),
            org_id=self.org_id,
            number=abs(hash(uuid.uuid4())) % 10**9,
            site_id=site.id,
            region_id=self.region,
            title="Lock change",
            status=status,
            priority="NORMAL",
            created_by="u",
            created_at=when - timedelta(days=1),
            updated_at=when,
            completed_at=when if status == "COMPLETED" else None,
        )

    def hold(self, target_type: str, target_id: str) -> LegalHold:
        return LegalHold(
            id=str(uuid.uuid4()),
            org_id=self.org_id,
            target_type=target_type,
            target_id=target_id,
            reason="Litigation 2032-17",
            placed_by="admin",
            placed_at=NOW - YEAR,
        )


async def _add(db: Database, *rows: Any) -> None:
    async with db.unit_of_work() as session:
        for row in rows:
            session.add(row)
            await session.flush()


async def _exists(db: Database, model: Any, row_id: str) -> bool:
    async with db.unit_of_work() as session:
        return await session.get(model, row_id) is not None


async def _customer(db: Database, customer_id: str) -> Customer:
    async with db.unit_of_work() as session:
        row = await session.get(Customer, customer_id)
        assert row is not None
        return row


async def _events(db: Database, org_id: str) -> list[dict[str, Any]]:
    """The audit events the purge wrote (still in the outbox: nothing delivers them here)."""
    from doorward.audit.v1 import audit_pb2

    async with db.unit_of_work() as session:
        payloads = (await session.execute(select(AuditOutbox.payload))).scalars().all()
    events = []
    for payload in payloads:
        message = audit_pb2.AuditEvent.FromString(payload)
        if message.org_id == org_id:
            events.append(
                {
                    "action": message.action,
                    "actor": message.actor_id,
                    "target": message.target_id,
                    "details": dict(message.details),
                    "raw": str(message),
                }
            )
    return events


def _purged(events: list[dict[str, Any]], kind: str) -> int:
    return sum(
        int(e["details"]["count"])
        for e in events
        if e["action"] == "retention.purge" and e["details"]["kind"] == kind
    )


async def test_past_retention_gone_held_stays_idempotent(db: Database) -> None:
    w = World(str(uuid.uuid4()))
    # A: one job finished 7 years ago -> the job goes, and then the contact data (no job left).
    a = w.customer(age=8 * YEAR)
    a_site = w.site(a)
    a_job = w.job(a_site, finished_ago=7 * YEAR)
    a_line = InvoiceLine(
        id=str(uuid.uuid4()),
        org_id=w.org_id,
        work_order_id=a_job.id,
        description="Cylinder",
        quantity=1,
        unit_price=10,
    )
    # B: the same, but its job is on hold -> job and contact data stay.
    b = w.customer(age=8 * YEAR)
    b_site = w.site(b)
    b_job = w.job(b_site, finished_ago=7 * YEAR)
    # C: a job 3 years ago -> the job stays (six years), the contact data goes (two years).
    c = w.customer(age=4 * YEAR)
    c_site = w.site(c)
    c_job = w.job(c_site, finished_ago=3 * YEAR)
    # D: site on hold -> its old job and the customer's contact data stay.
    d = w.customer(age=8 * YEAR)
    d_site = w.site(d)
    d_job = w.job(d_site, finished_ago=7 * YEAR)
    # E: customer on hold, no job for years -> stays.
    e = w.customer(age=5 * YEAR)
    # F: a new customer -> stays. G: an open job scheduled long ago -> job and contact stay.
    f = w.customer(age=timedelta(days=10))
    g = w.customer(age=8 * YEAR)
    g_site = w.site(g)
    g_job = w.job(g_site, finished_ago=7 * YEAR, status="SCHEDULED")
    # H: a customer whose job was cancelled 7 years ago -> both go.
    h = w.customer(age=8 * YEAR)
    h_site = w.site(h)
    h_job = w.job(h_site, finished_ago=7 * YEAR, status="CANCELLED")
    await _add(db, a, b, c, d, e, f, g, h, a_site, b_site, c_site, d_site, g_site, h_site)
    await _add(db, a_job, b_job, c_job, d_job, g_job, h_job, a_line)
    holds = [w.hold("WORK_ORDER", b_job.id), w.hold("SITE", d_site.id), w.hold("CUSTOMER", e.id)]
    await _add(db, *holds)
    forgotten: list[str] = []

    purge = Purge(db, batch=2, clock=lambda: NOW, forget_key=forgotten.append)
    result = await purge.run_once()
    assert result.ran and not result.resumed
    assert (result.work_orders, result.customers) == (2, 3)  # a_job, h_job; A, C, H

    for job, gone in ((a_job, True), (h_job, True), (b_job, False), (c_job, False)):
        assert await _exists(db, WorkOrder, job.id) is not gone, job.title
    for job in (d_job, g_job):
        assert await _exists(db, WorkOrder, job.id)
    assert not await _exists(db, InvoiceLine, a_line.id)
    for customer, erased in ((a, True), (c, True), (h, True), (b, False), (d, False)):
        row = await _customer(db, customer.id)
        assert (row.erased_at is not None) is erased
        assert (row.contact is None and row.wrapped_key is None) is erased
    for customer in (e, f, g):
        assert (await _customer(db, customer.id)).contact is not None
    async with db.unit_of_work() as session:
        site = await session.get(Site, a_site.id)
        assert site is not None and site.address is None
    assert sorted(forgotten) == sorted([a.id, c.id, h.id])

    events = await _events(db, w.org_id)
    assert _purged(events, "work_order") == 2 and _purged(events, "contact_data") == 3
    erased = [e for e in events if e["action"] == "customer.erase"]
    assert sorted(x["target"] for x in erased) == sorted([a.id, c.id, h.id])
    assert all(x["details"]["reason"] == "retention" for x in erased)
    assert all(x["actor"] == "" for x in events)
    assert not any("Litigation" in x["raw"] or "Lock change" in x["raw"] for x in events)

    # Idempotent: nothing more is due.
    again = await Purge(db, batch=2, clock=lambda: NOW).run_once()
    assert (again.work_orders, again.customers) == (0, 0)

    # Releasing the hold on B's job lets both go at the next run.
    async with db.unit_of_work() as session:
        hold = await session.get(LegalHold, holds[0].id)
        assert hold is not None
        hold.released_at = NOW
    after = await Purge(db, batch=2, clock=lambda: NOW).run_once()
    assert (after.work_orders, after.customers) == (1, 1)
    assert not await _exists(db, WorkOrder, b_job.id)


async def test_the_organisation_policy_decides(db: Database) -> None:
    w = World(str(uuid.uuid4()))
    c = w.customer(age=3 * YEAR)
    site = w.site(c)
    job = w.job(site, finished_ago=2 * YEAR)
    await _add(db, c, site, job)
    await _add(
        db,
        RetentionPolicyRow(
            org_id=w.org_id,
            work_order_days=365,
            contact_data_days=1000,
            site_secret_days=730,
            grant_days=90,
            audit_event_days=2192,
            trace_days=30,
            updated_by="admin",
        ),
    )
    result = await Purge(db, clock=lambda: NOW).run_once()
    # Work orders after one year here: the job (two years old) goes.
    assert result.work_orders == 1 and not await _exists(db, WorkOrder, job.id)
    # Contact data after 1000 days, counted from the last job (730 days ago), which the purge
    # remembered when it deleted the job: it stays, although the customer is 1095 days old.
    assert result.customers == 0
    assert (await _customer(db, c.id)).contact is not None
    later = await Purge(db, clock=lambda: NOW + timedelta(days=271)).run_once()
    assert later.customers == 1 and (await _customer(db, c.id)).contact is None


async def test_exactly_one_runner_at_a_time(db: Database) -> None:
    w = World(str(uuid.uuid4()))
    c = w.customer(age=8 * YEAR)
    site = w.site(c)
    jobs = [w.job(site, finished_ago=7 * YEAR) for _ in range(3)]
    await _add(db, c, site, *jobs)
    inside, go_on = asyncio.Event(), asyncio.Event()

    async def pause() -> None:
        inside.set()
        await go_on.wait()

    first = Purge(db, batch=1, clock=lambda: NOW, after_batch=pause)
    task = asyncio.create_task(first.run_once())
    await asyncio.wait_for(inside.wait(), 10)
    # Another replica (or a restart racing the old process) finds the lock taken.
    second = await Purge(db, batch=1, clock=lambda: NOW).run_once()
    assert not second.ran
    first.after_batch = None
    go_on.set()
    result = await asyncio.wait_for(task, 30)
    assert result.ran and result.work_orders == 3


async def test_a_crashed_run_is_resumed(db: Database) -> None:
    w = World(str(uuid.uuid4()))
    c = w.customer(age=timedelta(days=1))
    site = w.site(c)
    jobs = [w.job(site, finished_ago=7 * YEAR) for _ in range(5)]
    await _add(db, c, site, *jobs)
    batches = 0

    async def crash() -> None:
        nonlocal batches
        batches += 1
        if batches == 1:
            raise RuntimeError("killed mid-run (test)")

    with pytest.raises(RuntimeError):
        await Purge(db, batch=2, clock=lambda: NOW, after_batch=crash).run_once()
    left = [j for j in jobs if await _exists(db, WorkOrder, j.id)]
    assert len(left) == 3  # one whole batch committed, nothing half-done
    async with db.unit_of_work() as session:
        run = (
            await session.execute(select(PurgeRun).order_by(PurgeRun.started_at.desc()).limit(1))
        ).scalar_one()
        assert run.status == "RUNNING" and run.work_orders == 2
    purge = Purge(db, batch=2, clock=lambda: NOW)
    assert await purge.due()
    resumed = await purge.run_once()
    assert resumed.resumed and resumed.run_id == run.id
    assert resumed.work_orders == 5  # the run's total, across the crash
    assert not [j for j in jobs if await _exists(db, WorkOrder, j.id)]
    assert not await purge.due()


KILLABLE = """
import asyncio, sys
from datetime import datetime
from doorward_kit.db import Database
from services.workorders.purge import Purge

async def main() -> None:
    db = Database(sys.argv[1], pool_size=2)
    async def slow() -> None:
        print("batch", flush=True)
        await asyncio.sleep(30)
    now = datetime.fromisoformat(sys.argv[2])
    await Purge(db, batch=2, clock=lambda: now, after_batch=slow).run_once()

asyncio.run(main())
"""


async def test_a_killed_process_leaves_whole_batches_and_the_next_run_finishes(
    db: Database,
) -> None:
    w = World(str(uuid.uuid4()))
    c = w.customer(age=timedelta(days=1))
    site = w.site(c)
    jobs = [w.job(site, finished_ago=7 * YEAR) for _ in range(5)]
    await _add(db, c, site, *jobs)
    url = db.engine.url.render_as_string(hide_password=False)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, url, NOW.isoformat()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
        assert line.strip() == b"batch"
        # While it sleeps holding the lock, nobody else purges.
        assert not (await Purge(db, clock=lambda: NOW).run_once()).ran
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert len([j for j in jobs if await _exists(db, WorkOrder, j.id)]) == 3

    # PostgreSQL notices the dead connection and frees the lock; then the run resumes.
    for _ in range(100):
        result = await Purge(db, batch=2, clock=lambda: NOW).run_once()
        if result.ran:
            break
        await asyncio.sleep(0.1)
    assert result.ran and result.resumed and result.work_orders == 5
    assert not [j for j in jobs if await _exists(db, WorkOrder, j.id)]
    async with db.unit_of_work() as session:
        open_runs = await session.execute(
            select(func.count()).select_from(PurgeRun).where(PurgeRun.status == "RUNNING")
        )
        assert open_runs.scalar_one() == 0


async def test_audit_events_are_pruned_per_organisation_policy(db: Database) -> None:
    w, v = World(str(uuid.uuid4())), World(str(uuid.uuid4()))
    await _add(db, w.customer(age=timedelta(days=1)), v.customer(age=timedelta(days=1)))
    await _add(
        db,
        RetentionPolicyRow(
            org_id=v.org_id,
            work_order_days=2192,
            contact_data_days=730,
            site_secret_days=730,
            grant_days=90,
            audit_event_days=183,
            trace_days=30,
            updated_by="admin",
        ),
    )
    asked: dict[str, datetime] = {}

    async def prune(org_id: str, before: datetime, held: Sequence[str] = ()) -> int:
        asked[org_id] = before
        if org_id == v.org_id:
            from doorward_kit.errors import DoorwardError, ErrorCode

            raise DoorwardError(ErrorCode.UNAVAILABLE, "audit is down (test)")
        return 7

    result = await Purge(db, clock=lambda: NOW, prune_audit=prune).run_once()
    assert asked[w.org_id] == NOW - timedelta(days=2192)  # the default: six years
    assert asked[v.org_id] == NOW - timedelta(days=183)  # this organisation's setting
    # One organisation's audit service failure does not stop the run.
    assert result.ran and result.audit_events == 7


async def test_the_grant_registry_is_pruned_per_policy_and_holds_reach_secrets(
    db: Database,
) -> None:
    w, v = World(str(uuid.uuid4())), World(str(uuid.uuid4()))
    held_customer, free_customer = w.customer(age=YEAR), w.customer(age=YEAR)
    held_site, free_site = w.site(held_customer), w.site(free_customer)
    held_by_site = w.site(free_customer)
    held_job, free_job = (
        w.job(free_site, finished_ago=None, status="DISPATCHED"),
        w.job(free_site, finished_ago=None, status="DISPATCHED"),
    )
    v_customer = v.customer(age=YEAR)
    await _add(
        db,
        held_customer,
        free_customer,
        held_site,
        free_site,
        held_by_site,
        held_job,
        free_job,
        v_customer,
    )
    released = w.hold("WORK_ORDER", free_job.id)
    released.released_at = NOW - timedelta(days=1)
    await _add(
        db,
        w.hold("CUSTOMER", held_customer.id),
        w.hold("SITE", held_by_site.id),
        w.hold("WORK_ORDER", held_job.id),
        released,
        RetentionPolicyRow(
            org_id=v.org_id,
            work_order_days=2192,
            contact_data_days=730,
            site_secret_days=730,
            grant_days=7,
            audit_event_days=2192,
            trace_days=30,
            updated_by="admin",
        ),
    )
    asked: dict[str, tuple[datetime, set[str], set[str]]] = {}

    async def prune(org_id: str, before: datetime, sites: list[str], orders: list[str]) -> int:
        asked[org_id] = (before, set(sites), set(orders))
        if org_id == v.org_id:
            from doorward_kit.errors import DoorwardError, ErrorCode

            raise DoorwardError(ErrorCode.UNAVAILABLE, "secrets is down (test)")
        return 3

    result = await Purge(db, clock=lambda: NOW, prune_grants=prune).run_once()
    before, sites, orders = asked[w.org_id]
    assert before == NOW - timedelta(days=90)  # the default
    assert sites == {held_site.id, held_by_site.id}  # the held customer's site and the held site
    assert orders == {held_job.id}  # a released hold holds nothing
    assert asked[v.org_id] == (NOW - timedelta(days=7), set(), set())  # its own setting
    # One organisation's failure does not stop the run.
    assert result.ran and result.grants == 3


async def test_site_secrets_of_sites_without_a_recent_job_are_retired_unless_held(
    db: Database,
) -> None:
    w = World(str(uuid.uuid4()))
    customer, held_customer = w.customer(age=5 * YEAR), w.customer(age=5 * YEAR)
    stale, recent, busy, held_job_site = (w.site(customer) for _ in range(4))
    held_site, young = w.site(customer), w.site(customer)
    young.created_at = NOW - timedelta(days=100)
    of_held_customer = w.site(held_customer)
    await _add(db, customer, held_customer)
    await _add(db, stale, recent, busy, held_job_site, held_site, young, of_held_customer)
    old_job = w.job(held_job_site, finished_ago=4 * YEAR)
    await _add(
        db,
        w.job(stale, finished_ago=3 * YEAR),
        w.job(recent, finished_ago=timedelta(days=30)),
        w.job(busy, finished_ago=4 * YEAR, status="DISPATCHED"),
        old_job,
    )
    await _add(
        db,
        w.hold("WORK_ORDER", old_job.id),
        w.hold("SITE", held_site.id),
        w.hold("CUSTOMER", held_customer.id),
    )
    asked: list[tuple[str, datetime, list[str]]] = []

    async def retire(org_id: str, before: datetime, sites: list[str]) -> int:
        asked.append((org_id, before, sites))
        return len(sites)

    result = await Purge(db, clock=lambda: NOW, retire_site_secrets=retire).run_once()
    mine = [a for a in asked if a[0] == w.org_id]
    assert [(before, set(sites)) for _, before, sites in mine] == [
        (NOW - timedelta(days=730), {stale.id})  # the default: two years without a job
    ]
    assert result.site_secrets >= 1
