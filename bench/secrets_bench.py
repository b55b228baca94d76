"""Secrets service benchmark, one run, real everything (embedded PostgreSQL, dev OpenBao, the
real service over real HTTP + gRPC; audit and workorders are in-process gRPC servicers).

Reports:
  1. reveal latency p50/p99: IssueGrant (gRPC) + POST reveal (HTTP), and each part alone,
     against a single raw hvac KV v2 read on the same Vault (root token, unwrapped) as baseline;
  2. Vault tokens and leases left after N expired grants (short TTLs; default 10,000 grants
     living 30 s each), and the most seen at once while issuing them.

    .venv/bin/python -m bench.secrets_bench [--grants 10000] [--samples 300]
        [--concurrency 32] [--ttl 30]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac

from deploy.embedded import EmbeddedOpenBao, EmbeddedPostgres, free_port_pair, provision_vault
from tests.integration.secrets.conftest import SecretsHarness, running_secrets


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<34} p50 {pct(values, 0.5) * 1000:7.2f} ms"
        f"   p99 {pct(values, 0.99) * 1000:7.2f} ms"
        f"   mean {statistics.mean(values) * 1000:7.2f} ms   (n={len(values)})"
    )


def vault_counts(root: hvac.Client) -> tuple[int, int]:
    """(token accessors, lease ids) currently held by Vault."""
    tokens = len(root.adapter.list("/v1/auth/token/accessors")["data"]["keys"])
    return tokens, count_leases(root, "")


def count_leases(root: hvac.Client, prefix: str) -> int:
    try:
        keys = root.adapter.list(f"/v1/sys/leases/lookup/{prefix}")["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return 0
    total = 0
    for key in keys:
        total += count_leases(root, prefix + key) if key.endswith("/") else 1
    return total


async def latency(h: SecretsHarness, root: hvac.Client, samples: int) -> None:
    org_id = str(uuid.uuid4())
    ref_id, site_id = await h.new_secret(org_id, "bench-" + uuid.uuid4().hex)
    kv_path = (await h.service.get_refs(org_id, [ref_id], []))[0].kv_path
    raw, issue, reveal, both = [], [], [], []
    for _ in range(20):  # warm-up
        await asyncio.to_thread(
            root.secrets.kv.v2.read_secret_version,
            path=kv_path,
            mount_point="doorward-kv",
            raise_on_deleted_version=True,
        )
    for _ in range(samples):
        t0 = time.perf_counter()
        await asyncio.to_thread(
            root.secrets.kv.v2.read_secret_version,
            path=kv_path,
            mount_point="doorward-kv",
            raise_on_deleted_version=True,
        )
        raw.append(time.perf_counter() - t0)
    for i in range(samples + 20):
        job = await h.job(org_id, ref_id, site_id)
        t0 = time.perf_counter()
        grant = await h.grant(job, ref_id)
        t1 = time.perf_counter()
        response = await h.reveal(grant, job.token)
        t2 = time.perf_counter()
        assert response.status_code == 200, response.text
        if i >= 20:
            issue.append(t1 - t0)
            reveal.append(t2 - t1)
            both.append(t2 - t0)
    print("latency (single client, sequential)")
    print(line("raw hvac KV v2 read (baseline)", raw))
    print(line("IssueGrant (gRPC)", issue))
    print(line("reveal (HTTP POST)", reveal))
    print(line("grant issue + reveal", both))
    print(
        f"  ratio issue+reveal / raw read: p50 x{pct(both, 0.5) / pct(raw, 0.5):.1f}, "
        f"p99 x{pct(both, 0.99) / pct(raw, 0.99):.1f}"
    )


async def expired(
    h: SecretsHarness, root: hvac.Client, count: int, concurrency: int, ttl: float
) -> None:
    org_id = str(uuid.uuid4())
    ref_id, site_id = await h.new_secret(org_id, "expire-" + uuid.uuid4().hex)
    job = await h.job(org_id, ref_id, site_id)
    await asyncio.sleep(1.0)
    before = await asyncio.to_thread(vault_counts, root)
    gate = asyncio.Semaphore(concurrency)
    issued = 0

    async def one() -> None:
        nonlocal issued
        async with gate:
            # Each grant lives `ttl` s (its window closes then): short TTLs on purpose.
            await h.grant(job, ref_id, window_end=datetime.now(UTC) + timedelta(seconds=ttl))
            issued += 1

    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            now = await asyncio.to_thread(vault_counts, root)
            peak = max(peak, now)
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    issue_seconds = time.perf_counter() - t0
    done.set()
    await sampler
    print(
        f"expired grants: issued {issued} in {issue_seconds:.1f} s "
        f"({issued / issue_seconds:.0f}/s, concurrency {concurrency})"
    )
    print(
        f"  Vault before: {before[0]} tokens, {before[1]} leases; most seen while issuing: "
        f"{peak[0]} tokens, {peak[1]} leases (grant TTL {ttl:.0f} s)"
    )
    await asyncio.sleep(ttl + 0.5)
    t1 = time.perf_counter()
    while True:
        clean = await unclean_count(h)
        if clean == 0 or time.perf_counter() - t1 > 300:
            break
        await asyncio.sleep(0.5)
    after = await asyncio.to_thread(vault_counts, root)
    print(
        f"  all expired; sweeper done in {time.perf_counter() - t1:.1f} s "
        f"(grants not yet clean: {clean})"
    )
    print(
        f"  Vault after: {after[0]} tokens, {after[1]} leases "
        f"-> left behind by {issued} expired grants: {after[0] - before[0]} tokens, "
        f"{after[1] - before[1]} leases"
    )


async def unclean_count(h: SecretsHarness) -> int:
    from sqlalchemy import func, select

    from services.secrets.models import Grant

    async with h.service.db.unit_of_work() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).select_from(Grant).where(Grant.vault_clean.is_(False))
                )
            ).scalar_one()
        )


async def main(args: Any) -> None:
    root_dir = Path(tempfile.mkdtemp(prefix="doorward-bench-secrets-"))
    pg = EmbeddedPostgres(root_dir / "pg")
    bao = EmbeddedOpenBao(root_dir / "bao", free_port_pair(), dev=True)
    try:
        pg.start()
        bao.start()
        creds = provision_vault(bao.client())
        root = bao.client()
        async with running_secrets(
            db_url=pg.create_database("secrets_bench"),
            vault_addr=bao.addr,
            role_id=creds.role_id,
            secret_id=creds.secret_id,
            secrets_sweep_seconds=1.0,
            # One technician issues the 10,000 grants here: lift the per-user limits.
            secrets_max_open_grants=1_000_000,
            secrets_grant_rate_limit=1_000_000,
        ) as h:
            await latency(h, root, args.samples)
            await expired(h, root, args.grants, args.concurrency, args.ttl)
    finally:
        bao.stop()
        pg.stop()
        shutil.rmtree(root_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--ttl", type=float, default=30.0, help="grant lifetime, seconds")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
