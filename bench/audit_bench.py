"""Audit throughput: durable ingestion through the real service vs raw PostgreSQL INSERTs, and
verification speed. Run: `.venv/bin/python bench/audit_bench.py [--events N]`.

Everything runs here, in one go, on one embedded PostgreSQL (fsync on, synchronous_commit on):
- raw INSERT: asyncpg executemany of the same rows into a plain copy of the events table, one
  commit per batch (the ceiling for what audit stores per batch);
- audit ingestion: `python -m services.audit` as its own process, AppendEvents over gRPC in
  batches, acknowledged only after commit (hash chain, alert rules, head lock included);
- verification: the offline verifier over every stored row (recomputing every hash, the Merkle
  root and the checkpoint signature).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.embedded import EmbeddedPostgres, stop_pid
from doorward_kit.audit_client import AuditRecord, Outcome
from doorward_kit.grpc import ServiceChannel
from doorward_kit.net import free_port
from services.audit.verify import verify_rows
from tests.fixtures.pki import ServicePki

# Certificates from a throw-away test CA (mutual TLS, as `doorward up` runs it).
PKI = ServicePki(Path(tempfile.mkdtemp(prefix="doorward-bench-pki-")))
PRODUCER = "workorders"
BATCH = 200


def make_records(org: str, n: int) -> list[AuditRecord]:
    actors = [str(uuid.uuid4()) for _ in range(50)]
    return [
        AuditRecord(
            org_id=org,
            actor_id=actors[i % len(actors)],
            action="workorder.update",
            outcome=Outcome.ALLOWED,
            target_type="WorkOrder",
            target_id=str(uuid.uuid4()),
            work_order_id=str(uuid.uuid4()),
            trace_id=uuid.uuid4().hex,
            source_ip="10.0.0.1",
            details={"status": "DISPATCHED"},
        )
        for i in range(n)
    ]


async def raw_insert_rate(dsn: str, records: list[AuditRecord]) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS raw_events")
        await conn.execute(
            "CREATE TABLE raw_events (LIKE audit_events INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        statement = (
            "INSERT INTO raw_events (org_id, seq, id, occurred_at, actor_id, action, outcome,"
            " work_order_id, secret_ref_id, target_type, target_id, trace_id, source_ip,"
            " service, details, prev_hash, hash) VALUES"
            " ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15::jsonb,$16,$17)"
        )
        rows = [
            (
                r.org_id,
                i + 1,
                r.id,
                r.occurred_at,
                r.actor_id,
                r.action,
                r.outcome.value,
                r.work_order_id,
                r.secret_ref_id,
                r.target_type,
                r.target_id,
                r.trace_id,
                r.source_ip,
                "bench",
                '{"status": "DISPATCHED"}',
                "0" * 64,
                "f" * 64,
            )
            for i, r in enumerate(records)
        ]
        start = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            async with conn.transaction():
                await conn.executemany(statement, rows[i : i + BATCH])
        elapsed = time.perf_counter() - start
        await conn.execute("DROP TABLE raw_events")
        return len(rows) / elapsed
    finally:
        await conn.close()


async def ingest_rate(target: str, per_client: list[list[AuditRecord]]) -> float:
    channel = ServiceChannel(target, PKI.auth(PRODUCER), default_deadline=30, server="audit")
    stub = audit_pb2_grpc.AuditStub(channel.channel)

    async def client(records: list[AuditRecord]) -> None:
        for i in range(0, len(records), BATCH):
            batch = [r.to_proto(PRODUCER) for r in records[i : i + BATCH]]
            reply = await channel.call(
                stub.AppendEvents, audit_pb2.AppendEventsRequest(events=batch)
            )
            assert reply.accepted == len(batch)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client(records) for records in per_client))
        elapsed = time.perf_counter() - start
    finally:
        await channel.close()
    return sum(len(r) for r in per_client) / elapsed


async def wait_ready(url: str, proc: subprocess.Popen) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit("the audit service exited")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the audit service did not become ready")


async def main(events: int, clients: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="doorward-bench-"))
    os.chmod(root, 0o755)
    pg = EmbeddedPostgres(root / "pgdata")
    pg.start()
    proc: subprocess.Popen | None = None
    try:
        url = pg.create_database("audit_bench")
        http_port, grpc_port = free_port(), free_port()
        key_file = root / "audit-signing-key.pem"
        env = {
            **os.environ,
            "DOORWARD_ENV": "development",
            **PKI.env("audit"),
            "DOORWARD_AUDIT_DB_URL": url,
            "DOORWARD_AUDIT_SIGNING_KEY_FILE": str(key_file),
            "DOORWARD_ALLOW_UNSIGNED_GRAPHQL": "true",  # no GraphQL here, and no gateway key
            "DOORWARD_AUDIT_HTTP_PORT": str(http_port),
            "DOORWARD_AUDIT_GRPC_PORT": str(grpc_port),
            "DOORWARD_AUDIT_CHECKPOINT_INTERVAL": "3600",
            "OTEL_TRACES_EXPORTER": "none",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.audit"],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_ready(f"http://127.0.0.1:{http_port}/readyz", proc)
        dsn = pg.admin_url("audit_bench")
        target = f"127.0.0.1:{grpc_port}"

        # Warm-up (connections, caches), not measured; then table statistics as autovacuum
        # keeps them in a running system (a never-analyzed table gets poor plans).
        await ingest_rate(target, [make_records("org-warm", 10 * BATCH)])
        conn = await asyncpg.connect(pg.admin_url("audit_bench"))
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

        raw = await raw_insert_rate(dsn, make_records("org-raw", events))
        one_org = await ingest_rate(target, [make_records("org-single", events)])
        per = events // clients
        many = await ingest_rate(
            target, [make_records(f"org-multi-{i}", per) for i in range(clients)]
        )
        same = await ingest_rate(target, [make_records("org-shared", per) for _ in range(clients)])

        conn = await asyncpg.connect(dsn)
        try:
            rows = [
                dict(r)
                for r in await conn.fetch(
                    "SELECT * FROM audit_events WHERE org_id = 'org-single' ORDER BY seq"
                )
            ]
        finally:
            await conn.close()
        start = time.perf_counter()
        # The chain only: these rows come without checkpoints, which a key would demand.
        (report,) = verify_rows(rows)
        verify_rate = len(rows) / (time.perf_counter() - start)
        assert report.ok, report.problems

        print(f"events per scenario       {events} (batches of {BATCH}, {clients} clients)")
        print(f"raw PostgreSQL INSERT     {raw:10.0f} events/s (executemany, commit per batch)")
        print(f"audit, 1 client, 1 org    {one_org:10.0f} events/s  ({one_org / raw:.0%} of raw)")
        label = f"audit, {clients} clients, {clients} orgs"
        print(f"{label:<26}{many:10.0f} events/s  ({many / raw:.0%} of raw)")
        print(f"audit, {clients} clients, 1 org   {same:10.0f} events/s  ({same / raw:.0%} of raw)")
        print(f"verification (offline)    {verify_rate:10.0f} events/s over {len(rows)} events")
    finally:
        if proc is not None:
            stop_pid(proc.pid)
        pg.stop()
        shutil.rmtree(PKI.root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.clients))
