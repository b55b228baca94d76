"""The board's reads on the asyncpg connection (issue 11): the same rows as the SQLAlchemy
statements they replaced, for every combination of the page's filters, and nothing of another
organisation."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import and_, or_, select, text

from services.workorders.models import WorkOrder
from services.workorders.repository import OrderRow, Repository
from tests.integration.workorders.conftest import Org, Running, make_job

pytestmark = pytest.mark.integration


def _reference_page(
    org_id: str,
    *,
    regions: frozenset[str] | None,
    assignee_id: str | None,
    status: str | None,
    region_id: str | None,
    start_from: datetime | None,
    start_to: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Any:
    """The page as the SQLAlchemy select before the raw path built it (the oracle)."""
    w = WorkOrder.__table__.c
    query = select(*(w[f.name] for f in fields(OrderRow))).where(w.org_id == org_id)
    if regions is not None:
        query = query.where(w.region_id.in_(sorted(regions)))
    if assignee_id is not None:
        query = query.where(w.assignee_id == assignee_id)
    if status is not None:
        query = query.where(w.status == status)
    if region_id is not None:
        query = query.where(w.region_id == region_id)
    if start_from is not None:
        query = query.where(w.scheduled_end > start_from)
    if start_to is not None:
        query = query.where(w.scheduled_start < start_to)
    if after is not None:
        query = query.where(
            or_(w.created_at > after[0], and_(w.created_at == after[0], w.id > after[1]))
        )
    return query.order_by(w.created_at, w.id).limit(limit)


async def _variants(running: Running, org: Org, source: str) -> None:
    """Copies of one work order in both regions, several statuses, assignees, windows and
    creation times (some equal, for the keyset's tie on id)."""
    base = datetime(2026, 11, 1, 8, tzinfo=UTC)
    async with running.runtime.db.engine.begin() as conn:
        for k in range(16):
            start = base + timedelta(hours=3 * k) if k % 5 else None
            await conn.execute(
                text(
                    "INSERT INTO work_orders (id, org_id, number, site_id, region_id, title,"
                    " description, status, priority, scheduled_start, scheduled_end,"
                    " assignee_id, created_by, created_at, updated_at)"
                    " SELECT :id, org_id, :number, site_id, :region, title, description,"
                    " :status, priority, :start, :end, :assignee, created_by, :created, now()"
                    " FROM work_orders WHERE id = :source"
                ),
                {
                    "id": str(uuid.uuid4()),
                    "number": 1000 + k,
                    "region": org.r1 if k % 3 else org.r2,
                    "status": ("SCHEDULED", "DISPATCHED", "DRAFT")[k % 3],
                    "start": start,
                    "end": start + timedelta(hours=2) if start else None,
                    "assignee": (org.tech.id, org.tech2.id, None)[k % 3],
                    "created": base + timedelta(minutes=k // 2),  # pairs share a time
                    "source": source,
                },
            )


async def test_every_filter_combination_reads_what_the_sqlalchemy_select_read(
    running: Running, org: Org
) -> None:
    job = await make_job(running, org)
    await _variants(running, org, job.work_order_id)
    other = running.new_org()  # another organisation's orders never appear
    await _variants(running, other, (await make_job(running, other)).work_order_id)
    async with running.runtime.db.reads() as session:
        everything = (
            await session.execute(
                _reference_page(
                    org.id,
                    regions=None,
                    assignee_id=None,
                    status=None,
                    region_id=None,
                    start_from=None,
                    start_to=None,
                    after=None,
                    limit=100,
                )
            )
        ).all()
    assert len(everything) == 17
    middle = everything[6]
    values: dict[str, Any] = {
        "regions": frozenset({org.r1}),
        "assignee_id": org.tech.id,
        "status": "DISPATCHED",
        "region_id": org.r1,
        "start_from": datetime(2026, 11, 2, tzinfo=UTC),
        "start_to": datetime(2026, 11, 3, 12, tzinfo=UTC),
        "after": (middle.created_at, middle.id),
    }
    compared = 0
    async with running.runtime.db.reads() as session:
        repo = Repository(session)
        for present in itertools.product((False, True), repeat=len(values)):
            chosen = {
                k: (v if p else None) for (k, v), p in zip(values.items(), present, strict=True)
            }
            for limit in (3, 100):
                expected = [
                    OrderRow(*row)
                    for row in await session.execute(_reference_page(org.id, **chosen, limit=limit))
                ]
                got = await repo.list_work_orders(org.id, **chosen, limit=limit)
                assert got == expected, chosen
                compared += bool(expected)
        # Two regions, and none at all (a dispatcher holding no region sees nothing).
        for regions in (frozenset({org.r1, org.r2}), frozenset()):
            unfiltered: dict[str, Any] = {k: None for k in values} | {"regions": regions}
            expected = [
                OrderRow(*row)
                for row in await session.execute(_reference_page(org.id, **unfiltered, limit=100))
            ]
            got = await repo.list_work_orders(org.id, **unfiltered, limit=100)
            assert got == expected and len(got) == (17 if regions else 0)
    assert compared > 64  # most combinations found something to compare
