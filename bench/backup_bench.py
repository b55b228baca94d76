"""Backup and restore of a stack with 10,000 work orders: the measured basis of RPO and RTO.

    .venv/bin/python bench/backup_bench.py [--work-orders 10000]

Every process on free loopback ports, in a fresh /tmp folder, stopped by its PID at the end
(also on failure or Ctrl-C):
  1. `doorward up` in its default mode (embedded PostgreSQL, persistent OpenBao);
  2. `doorward bootstrap`, then through the public API a region, a dispatcher, a technician,
     five customers and sites with a door code each, and 20 work orders (create, assign,
     attach); then work orders copied in SQL up to --work-orders, with three audit events
     each (create, assign, attach) appended through the audit service's own code (the chain
     stays valid);
  3. `doorward backup create` beside the running stack: archive size and time;
  4. `doorward backup verify`: time;
  5. the stack stopped; `doorward backup restore` into an empty folder: time; `doorward up` from
     it until the gateway is ready: time; the restored work orders counted and a door code
     revealed through the restored stack.
It prints the archive size, backup, verify and restore times, and the restored stack's start:
RPO is your backup interval plus the backup time, RTO the restore plus the start.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "bench backup key: " + uuid.uuid4().hex


def doorward(*args: str, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("doorward")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"doorward {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - started, done


def populate(env: dict[str, str], url: str, work_orders: int) -> tuple[object, str, str, str]:
    """Returns (world, site, secret, technician id) after filling the stack."""
    from tests.e2e.test_secret_access import Scenario
    from tests.e2e.world import PASSWORD, GraphQLClient, World, bootstrap_org

    org_id, admin = bootstrap_org(env, "Bench", "admin@bench-homes.com", PASSWORD)
    world = World(gql=GraphQLClient(url), org_id=org_id, admin=admin)
    world.login(admin)
    world.create_region("London")
    world.create_person("dispatcher", "DISPATCHER", ["London"])
    tech = world.create_person("tom", "TECHNICIAN", ["London"])
    s = Scenario(world)
    sites = [s.site_with_secret() for _ in range(5)]
    start = datetime.now(UTC) + timedelta(days=1)
    for n in range(20):
        site, secret = sites[n % 5]
        s.job(site, secret, tech.user_id, start=start + timedelta(hours=n), dispatch=False)
    asyncio.run(fill(Path(env["DOORWARD_DATA_DIR"]), org_id, work_orders - 20, tech.user_id))
    return world, sites[0][0], sites[0][1], tech.user_id


async def fill(data: Path, org_id: str, count: int, actor: str) -> None:
    import asyncpg

    from deploy.backup.ops import embedded_server
    from doorward_kit.audit_client import AuditRecord, Outcome
    from doorward_kit.db import Database
    from services.audit.service import AuditService, Incoming

    server = embedded_server(data)
    host, port, password = server.env["PGHOST"], server.env["PGPORT"], server.env["PGPASSWORD"]
    dsn = f"postgresql://postgres:{password}@/doorward_workorders?host={host}&port={port}"
    conn = await asyncpg.connect(dsn)
    try:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'work_orders' ORDER BY ordinal_position"
            )
        ]
        made = {
            "id": "gen_random_uuid()::text",
            "number": "t.number + 100000 + g",
            "title": "'Copied job ' || g",
        }
        select = ", ".join(made.get(c, f"t.{c}") for c in columns)
        ids = await conn.fetch(
            f"INSERT INTO work_orders ({', '.join(columns)}) SELECT {select} "
            "FROM (SELECT * FROM work_orders WHERE org_id = $1 ORDER BY created_at LIMIT 1) t, "
            "generate_series(1, $2) g RETURNING id",
            org_id,
            count,
        )
    finally:
        await conn.close()
    audit_password = (data / "credentials" / "audit" / "db-password").read_text().strip()
    db = Database(
        f"postgresql+asyncpg://doorward_audit:{audit_password}@/doorward_audit"
        f"?host={host}&port={port}",
        pool_size=1,
    )
    service = AuditService()
    try:
        batch: list[Incoming] = []
        for row in ids:
            for action in ("workorder.create", "workorder.assign", "secret.attach"):
                batch.append(
                    Incoming(
                        AuditRecord(
                            org_id=org_id,
                            actor_id=actor,
                            action=action,
                            outcome=Outcome.ALLOWED,
                            target_type="WorkOrder",
                            target_id=str(row["id"]),
                            work_order_id=str(row["id"]),
                        ),
                        "workorders",
                    )
                )
            if len(batch) >= 3000:
                async with db.unit_of_work() as session:
                    await service.append(session, batch)
                batch = []
        if batch:
            async with db.unit_of_work() as session:
                await service.append(session, batch)
    finally:
        await db.dispose()


def count_work_orders(data: Path) -> int:
    import asyncpg

    from deploy.backup.ops import embedded_server

    server = embedded_server(data)
    dsn = (
        f"postgresql://postgres:{server.env['PGPASSWORD']}@/doorward_workorders"
        f"?host={server.env['PGHOST']}&port={server.env['PGPORT']}"
    )

    async def run() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM work_orders"))
        finally:
            await conn.close()

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-orders", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("E2E_START_TIMEOUT", "600")
    from tests.e2e.conftest import START_TIMEOUT, start_up, stop_up, wait_for_gateway
    from tests.e2e.test_up import embedded_env

    root = Path(tempfile.mkdtemp(prefix="doorward-backup-bench-"))
    os.chmod(root, 0o755)
    env = embedded_env(root)
    env["DOORWARD_BACKUP_KEY"] = KEY
    url = f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql"
    archive = root / "archives" / "bench.dwbackup"
    archive.parent.mkdir()
    procs = [start_up(env, root / "up.log")]
    try:
        wait_for_gateway(procs[0], url, root / "up.log", START_TIMEOUT)
        t0 = time.monotonic()
        world, site, secret, _ = populate(env, url, args.work_orders)
        print(f"populated {args.work_orders} work orders in {time.monotonic() - t0:.1f}s")

        backup_s, created = doorward("backup", "create", "--output", str(archive), env=env)
        print(created.stdout.rstrip())
        verify_s, _ = doorward("backup", "verify", str(archive), env=env)
        stop_up(procs[0])

        restored_env = embedded_env(root)
        restored_env.update(
            DOORWARD_DATA_DIR=str(root / "restored"),
            DOORWARD_SHRED_LEDGER=str(root / "data.shred-ledger.jsonl"),
            DOORWARD_BACKUP_KEY=KEY,
        )
        restore_s, restored = doorward("backup", "restore", str(archive), env=restored_env)
        print(restored.stdout.rstrip())
        restored_url = f"http://127.0.0.1:{restored_env['DOORWARD_GATEWAY_PORT']}/graphql"
        started = time.monotonic()
        procs.append(start_up(restored_env, root / "restored-up.log"))
        wait_for_gateway(procs[1], restored_url, root / "restored-up.log", START_TIMEOUT)
        start_s = time.monotonic() - started
        restored_count = count_work_orders(root / "restored")

        from tests.e2e.test_restore_drill import reveal
        from tests.e2e.test_secret_access import Scenario
        from tests.e2e.world import GraphQLClient

        world.gql = GraphQLClient(restored_url)  # type: ignore[attr-defined]
        world.login(world.admin, otp=world.admin.recovery_codes.pop())  # type: ignore[attr-defined]
        tom = world.people["tom"]  # type: ignore[attr-defined]
        world.login(world.people["dispatcher"])  # type: ignore[attr-defined]
        world.login(tom)  # type: ignore[attr-defined]
        code = reveal(Scenario(world), site, secret, tom)  # type: ignore[arg-type]

        size = archive.stat().st_size
        print()
        print(f"work orders                 {args.work_orders} (restored: {restored_count})")
        print(f"archive size                {size / 1e6:.1f} MB")
        print(f"backup create               {backup_s:.1f} s (stack running)")
        print(f"backup verify               {verify_s:.1f} s")
        print(f"backup restore              {restore_s:.1f} s (into an empty folder)")
        print(f"up from the restored folder {start_s:.1f} s (until the gateway is ready)")
        print(f"RTO basis                   {restore_s + start_s:.1f} s (restore + start)")
        print(f"door code after restore     {'revealed' if code else 'MISSING'}")
        return 0 if restored_count == args.work_orders and code else 1
    finally:
        for proc in procs:
            stop_up(proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
