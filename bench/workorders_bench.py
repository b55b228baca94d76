"""Work-orders benchmark: `myJobs` latency for a technician with 20 jobs among 100,000.

    .venv/bin/python bench/workorders_bench.py [--orders 100000] [--runs 500]

Starts a throw-away embedded PostgreSQL, runs workorders' real migrations, bulk-loads the work
orders with COPY (1,000 technicians over 30 days, plus one technician with 20 jobs on the measured
day), then reports:
  - the query plan of the myJobs query (it must use ix_work_orders_assignee_start)
  - myJobs through the service layer (one unit of work, policy filter included)
  - myJobs as a GraphQL request over real HTTP (uvicorn, token verification included)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn

from deploy.embedded import EmbeddedPostgres
from doorward_kit.auth import Role
from doorward_kit.db import Database, run_migrations_async
from doorward_kit.gateway_signature import GatewayVerifier
from doorward_kit.graphql import GatewayGate
from doorward_kit.http import create_app
from doorward_kit.net import free_port
from services.workorders.__main__ import MIGRATIONS
from services.workorders.api.graphql import build_router
from services.workorders.crypto import ContactCrypto, DataKeyCache
from services.workorders.runtime import Runtime
from services.workorders.service import WorkOrdersService
from tests.fixtures.gateway_signing import SignedAsGateway, gateway_keys
from tests.fixtures.tokens import TestTokenIssuer

DAY = date(2026, 12, 1)
STATUSES = ("SCHEDULED", "DISPATCHED", "IN_PROGRESS", "COMPLETED", "CANCELLED")


class _Unused:
    """myJobs needs neither secrets nor identity; any call here would be a bug."""

    def __getattr__(self, name: str) -> Any:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"myJobs must not call {name}")

        return refuse


async def _load(dsn: str, org_id: str, region: str, tech_id: str, orders: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        customer_id, site_id = str(uuid.uuid4()), str(uuid.uuid4())
        await conn.execute(
            "INSERT INTO customers (id, org_id, region_id, key_version) VALUES ($1, $2, $3, 0)",
            customer_id,
            org_id,
            region,
        )
        await conn.execute(
            "INSERT INTO sites (id, org_id, customer_id, region_id) VALUES ($1, $2, $3, $4)",
            site_id,
            org_id,
            customer_id,
            region,
        )
        rng = random.Random(7)
        technicians = [str(uuid.uuid4()) for _ in range(1000)]
        base = datetime.combine(DAY - timedelta(days=15), dtime(6), tzinfo=UTC)
        now = datetime.now(UTC)
        rows = []
        for n in range(orders - 20):
            start = base + timedelta(days=rng.randrange(30), minutes=15 * rng.randrange(48))
            rows.append(
                (
                    str(uuid.uuid4()),
                    org_id,
                    n + 1,
                    site_id,
                    region,
                    "Job",
                    "",
                    rng.choice(STATUSES),
                    "NORMAL",
                    start,
                    start + timedelta(hours=2),
                    rng.choice(technicians),
                    "bench",
                    now,
                    now,
                )
            )
        day_start = datetime.combine(DAY, dtime(7), tzinfo=UTC)
        for i in range(20):
            start = day_start + timedelta(minutes=30 * i)
            rows.append(
                (
                    str(uuid.uuid4()),
                    org_id,
                    orders - 20 + i + 1,
                    site_id,
                    region,
                    "Mine",
                    "",
                    "DISPATCHED",
                    "HIGH",
                    start,
                    start + timedelta(minutes=30),
                    tech_id,
                    "bench",
                    now,
                    now,
                )
            )
        began = time.perf_counter()
        await conn.copy_records_to_table(
            "work_orders",
            records=rows,
            columns=[
                "id",
                "org_id",
                "number",
                "site_id",
                "region_id",
                "title",
                "description",
                "status",
                "priority",
                "scheduled_start",
                "scheduled_end",
                "assignee_id",
                "created_by",
                "created_at",
                "updated_at",
            ],
        )
        elapsed = time.perf_counter() - began
        await conn.execute("ANALYZE work_orders")
        print(f"loaded {len(rows):,} work orders with COPY in {elapsed:.2f} s")
        plan = await conn.fetch(
            "EXPLAIN SELECT * FROM work_orders WHERE org_id = $1 AND assignee_id = $2 "
            "AND scheduled_start >= $3 AND scheduled_end > $4 AND scheduled_start < $5 "
            "AND region_id = ANY($6) AND status <> 'CANCELLED' "
            "ORDER BY scheduled_start, id LIMIT 1000",
            org_id,
            tech_id,
            datetime.combine(DAY, dtime(0), tzinfo=UTC) - timedelta(hours=72),
            datetime.combine(DAY, dtime(0), tzinfo=UTC),
            datetime.combine(DAY + timedelta(days=1), dtime(0), tzinfo=UTC),
            [region],
        )
        print("plan:")
        for row in plan:
            print("   ", row[0])
    finally:
        await conn.close()


async def _measure(label: str, runs: int, call: Callable[[], Awaitable[int]]) -> None:
    for _ in range(20):  # warm up: pool, prepared statements, caches
        await call()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        count = await call()
        samples.append((time.perf_counter() - began) * 1000)
        assert count == 20, count
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]  # noqa: E731
    print(
        f"{label:<34} p50 {statistics.median(samples):6.2f} ms   p95 {p(0.95):6.2f} ms   "
        f"p99 {p(0.99):6.2f} ms   ({runs} runs, 20 jobs returned)"
    )


async def main(orders: int, runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="doorward-bench-wo-"))
    server = EmbeddedPostgres(root / "pgdata")
    server.start()
    try:
        url = server.create_database("workorders_bench")
        await run_migrations_async(MIGRATIONS, url)
        org_id, region, tech_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        await _load(dsn, org_id, region, tech_id, orders)

        db = Database(url)
        crypto = ContactCrypto(_Unused().create, _Unused().decrypt, DataKeyCache(60, 10))
        service = WorkOrdersService(_Unused(), _Unused(), crypto)
        issuer = TestTokenIssuer()
        principal = issuer.principal(
            user_id=tech_id, org_id=org_id, roles=[Role.TECHNICIAN], regions=[region]
        )

        async def direct() -> int:
            async with db.unit_of_work() as session:
                return len(await service.my_jobs(session, principal, DAY))

        await _measure("myJobs (service layer)", runs, direct)

        runtime = Runtime(db=db, service=service, verifier=issuer.verifier())
        app = create_app("bench", readiness=db.ping)
        keys = gateway_keys()
        gate = GatewayGate(GatewayVerifier.from_file(keys.public_file))
        app.include_router(build_router(runtime, gate=gate), prefix="/graphql")
        port = free_port()
        http = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        serving = asyncio.create_task(http.serve())
        while not http.started:
            await asyncio.sleep(0.02)
        token = issuer.token(
            user_id=tech_id, org_id=org_id, roles=[Role.TECHNICIAN], regions=[region]
        )
        query = {
            "query": "query($d: Date) { myJobs(date: $d) { id number title status "
            "scheduledStart scheduledEnd } }",
            "variables": {"d": DAY.isoformat()},
        }
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            auth=SignedAsGateway("127.0.0.1", keys.signer),  # as the gateway's requests are
        ) as client:

            async def over_http() -> int:
                response = await client.post("/graphql", json=query)
                return len(response.json()["data"]["myJobs"])

            await _measure("myJobs (GraphQL over HTTP)", runs, over_http)
        http.should_exit = True
        await serving
        await db.dispose()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.runs))
