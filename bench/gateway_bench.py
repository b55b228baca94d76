"""Throughput and latency: this gateway vs @apollo/gateway vs direct subgraph calls.

Run on demand:  .venv/bin/python bench/gateway_bench.py [--requests 2000] [--concurrency 16]
Every server runs in its own process on a free loopback port and is stopped by PID at the end.
These are small test subgraphs; bench/doorward_gateway_bench.py measures the technician's
`myJobs` query on the real stack (identity, workorders, audit, PostgreSQL, OpenBao).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doorward_kit.net import free_port  # noqa: E402

SIMPLE = "{ me { id name } }"
FEDERATED = "{ topProducts { name price reviews { body author { name username } } } }"
DIRECT = {"accounts": SIMPLE, "products": "{ topProducts { name price } }"}


def serve_subgraphs() -> None:
    """Child mode: run the three test subgraphs and print their URLs as JSON."""
    from tests.integration.gateway.harness import start_subgraphs

    running = start_subgraphs()
    print(json.dumps(running.urls), flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        running.stop()


def spawn(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
          ) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.post(url, json={"query": "{ __typename }"},
                           headers={"apollo-require-preflight": "1"}, timeout=2)
            if r.status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to compare per-request cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


async def load(url: str, query: str, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    body = json.dumps({"query": query}).encode()
    headers = {"content-type": "application/json", "apollo-require-preflight": "1"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up: plans cached, connections open
            (await client.post(url, content=body, headers=headers)).raise_for_status()
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200 or "errors" in r.json():
                    raise RuntimeError(f"bad response from {url}: {r.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sequential", type=int, default=500,
                    help="requests at concurrency 1 for the gateway-overhead figure")
    ap.add_argument("--serve-subgraphs", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_subgraphs:
        serve_subgraphs()
        return

    procs: list[subprocess.Popen[str]] = []
    try:
        sub = spawn([sys.executable, __file__, "--serve-subgraphs"], cwd=ROOT)
        procs.append(sub)
        assert sub.stdout is not None
        urls: dict[str, str] = json.loads(sub.stdout.readline())

        from gateway.composition import compose
        from gateway.server import fetch_sdls

        async def sdls() -> dict[str, tuple[str, str]]:
            async with httpx.AsyncClient() as c:
                return await fetch_sdls(c, urls, 30)

        supergraph = Path(tempfile.mkdtemp()) / "supergraph.graphql"
        supergraph.write_text(compose(asyncio.run(sdls())))

        ours_port = free_port()
        procs.append(spawn([sys.executable, "-m", "gateway", "serve", "--supergraph",
                            str(supergraph), "--port", str(ours_port), "--no-auth"], cwd=ROOT,
                           env={"DOORWARD_GATEWAY_RATE_LIMIT_PER_SECOND": "0",
                                "DOORWARD_ENV": "production"}))
        targets = {"gateway (python)": f"http://127.0.0.1:{ours_port}/graphql"}
        pids = {"gateway (python)": procs[-1].pid, "direct subgraph": sub.pid}

        cache = ROOT / ".cache" / "node-gateway"
        if (cache / "node_modules" / "@apollo" / "gateway").exists():
            for name in ("package.json", "apollo_gateway.mjs"):
                (cache / name).write_bytes((ROOT / "tests" / "compat" / name).read_bytes())
            apollo_port = free_port()
            procs.append(spawn(["node", str(cache / "apollo_gateway.mjs")], cwd=cache,
                               env={"SUBGRAPHS": json.dumps(urls), "PORT": str(apollo_port),
                                    "NODE_ENV": "production"}))
            targets["@apollo/gateway"] = f"http://127.0.0.1:{apollo_port}/"
            pids["@apollo/gateway"] = procs[-1].pid
        else:
            print("(@apollo/gateway not installed: run the compat test once to install it)")
        for url in targets.values():
            wait_http(url)

        results: dict[tuple[str, str], dict[str, float]] = {}
        for qname, query in (("simple", SIMPLE), ("federated", FEDERATED)):
            for tname, url in targets.items():
                before = cpu_seconds(pids[tname])
                results[(qname, tname)] = asyncio.run(
                    load(url, query, args.requests, args.concurrency))
                used = cpu_seconds(pids[tname]) - before
                results[(qname, tname)]["cpu"] = used * 1000 / (args.requests + 20)
        before = cpu_seconds(sub.pid)
        results[("simple", "direct subgraph")] = asyncio.run(
            load(urls["accounts"], DIRECT["accounts"], args.requests, args.concurrency))
        results[("simple", "direct subgraph")]["cpu"] = \
            (cpu_seconds(sub.pid) - before) * 1000 / (args.requests + 20)
        # Sequential (concurrency 1) latency: gateway overhead = gateway p50 - direct p50.
        seq = args.sequential
        lat_direct = asyncio.run(load(urls["accounts"], SIMPLE, seq, 1))
        lat_ours = asyncio.run(load(targets["gateway (python)"], SIMPLE, seq, 1))

        print(f"\n{args.requests} requests per row, concurrency {args.concurrency}\n")
        print(f"{'query':<10} {'target':<18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms/req':>10}")
        for (qname, tname), r in results.items():
            print(f"{qname:<10} {tname:<18} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
                  f"{r['cpu']:>10.2f}")
        for qname in ("simple", "federated"):
            ours = results[(qname, "gateway (python)")]
            apollo = results.get((qname, "@apollo/gateway"))
            if apollo:
                print(f"{qname}: throughput ratio python/apollo = {ours['rps'] / apollo['rps']:.2f}"
                      f", p50 ratio = {ours['p50'] / apollo['p50']:.2f}")
        print(f"sequential p50: direct {lat_direct['p50']:.2f} ms, gateway {lat_ours['p50']:.2f}"
              f" ms -> gateway overhead p50 {lat_ours['p50'] - lat_direct['p50']:.2f} ms")
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    main()
