"""Issue 14: an organisation's trace retention (its policy's traceDays) reaches the embedded
trace store and is enforced there. The workorders purge hands it over the store's mutual-TLS
SetOrgRetention (workorders' certificate), the store keeps it in its own database (a restarted
store still knows it) and prunes each organisation's traces by its own age; the store's own
DOORWARD_TRACES_RETENTION_DAYS stays the ceiling. The policy says who enforces it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from doorward_kit.db import Database, run_migrations_async
from doorward_kit.grpc import ServiceChannel
from services.traces.service import TraceStore
from services.workorders.__main__ import MIGRATIONS
from services.workorders.clients import GrpcTraceStore
from services.workorders.models import Customer, RetentionPolicyRow
from services.workorders.purge import Purge
from services.workorders.retention import TraceRetentionBy
from tests.integration.traces.harness import running_store
from tests.integration.traces.test_trace_store import export_spans
from tests.integration.workorders.conftest import Org, Running, ok

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def wo_db(postgres: Any) -> AsyncIterator[Database]:
    url = postgres.fresh_database("trace_retention")
    await run_migrations_async(MIGRATIONS, url)
    database = Database(url, pool_size=4)
    try:
        yield database
    finally:
        await database.dispose()


def _customer(org_id: str) -> Customer:
    return Customer(
        id=str(uuid.uuid4()),
        org_id=org_id,
        region_id="r1",
        wrapped_key=b"wrapped",
        key_version=1,
        contact=b"dwc2-sealed-contact",
        created_at=datetime.now(UTC),
    )


def _policy(org_id: str, trace_days: int) -> RetentionPolicyRow:
    return RetentionPolicyRow(
        org_id=org_id,
        work_order_days=2192,
        contact_data_days=730,
        site_secret_days=730,
        grant_days=90,
        audit_event_days=2192,
        trace_days=trace_days,
        updated_by="admin",
    )


async def _age(dsn: str, trace_id: str, days: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        shift = f"interval '{days} days'"
        await conn.execute(
            f"UPDATE spans SET started_at = started_at - {shift} WHERE trace_id = $1", trace_id
        )
        await conn.execute(
            f"UPDATE traces SET started_at = started_at - {shift}, "
            f"ended_at = ended_at - {shift} WHERE trace_id = $1",
            trace_id,
        )
    finally:
        await conn.close()


async def test_the_purge_sets_each_organisations_trace_retention_and_the_store_keeps_it(
    postgres: Any, wo_db: Database
) -> None:
    short, default, long, bare = (str(uuid.uuid4()) for _ in range(4))
    async with wo_db.unit_of_work() as session:
        for org_id in (short, default, long):
            session.add(_customer(org_id))
        session.add(_policy(short, 7))
        session.add(_policy(long, 90))  # longer than the store keeps: the store's limit wins
        session.add(_policy(bare, 3))  # a policy but no customers: its traces count too
    async with running_store(postgres, traces_retention_days=60) as s:
        channel = ServiceChannel(s.grpc_target, s.pki.auth("workorders"), server="traces")
        try:
            purge = Purge(wo_db, set_trace_retention=GrpcTraceStore(channel).set_org_retention)
            assert (await purge.run_once()).ran
            answer = await GrpcTraceStore(channel).set_org_retention(long, 90)
        finally:
            await channel.close()
        assert answer == 60.0
        conn = await asyncpg.connect(s.dsn)
        try:
            stored = {
                r["org_id"]: r["days"]
                for r in await conn.fetch("SELECT org_id, days FROM org_retention")
            }
        finally:
            await conn.close()
        # No row of its own: the default policy's 30 days, sent like any other.
        assert stored == {short: 7, default: 30, long: 90, bare: 3}

        traces = {}
        for org_id in (short, default, long):
            old = await asyncio.to_thread(export_spans, s.url, org_id)
            new = await asyncio.to_thread(export_spans, s.url, org_id)
            await _age(s.dsn, old, 10)
            traces[org_id] = (old, new)
        ancient = await asyncio.to_thread(export_spans, s.url, default)
        await _age(s.dsn, ancient, 45)

        # A restarted store (nothing in memory) loads the organisations' values and prunes
        # each organisation by its own age, exactly as its prune loop does.
        restarted = TraceStore(retention=timedelta(days=60))
        async with s.db.unit_of_work() as session:
            await restarted.load_org_retention(session)
            assert restarted.org_retention[short] == timedelta(days=7)
            while await restarted.prune(session, batch=2) + await restarted.prune_orgs(
                session, batch=2
            ):
                pass
        conn = await asyncpg.connect(s.dsn)
        try:
            left = {r["trace_id"] for r in await conn.fetch("SELECT trace_id FROM traces")}
            spans = {r["trace_id"] for r in await conn.fetch("SELECT trace_id FROM spans")}
        finally:
            await conn.close()
    expected = {
        traces[short][1],  # 7 days: only the fresh one
        *traces[default],  # 30 days: both, the 45-day-old one gone
        *traces[long],  # 60 days (the store's limit): both
    }
    assert left == spans == expected


async def test_the_policy_says_who_enforces_trace_retention(running: Running, org: Org) -> None:
    query = "{ retentionPolicy { traceDays traceRetentionBy } }"
    data = await ok(running, query, {}, org.admin.token)
    assert data["retentionPolicy"] == {"traceDays": 30, "traceRetentionBy": "TRACE_STORE"}
    # With an external collector (doorward up: DOORWARD_WORKORDERS_TRACE_STORE=0) the answer
    # says the operator's backend keeps the traces; Doorward deletes nothing there.
    running.runtime.trace_retention_by = TraceRetentionBy.EXTERNAL_BACKEND
    try:
        data = await ok(running, query, {}, org.admin.token)
    finally:
        running.runtime.trace_retention_by = TraceRetentionBy.TRACE_STORE
    assert data["retentionPolicy"]["traceRetentionBy"] == "EXTERNAL_BACKEND"
