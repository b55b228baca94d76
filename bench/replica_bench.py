"""Per-replica throughput of the board and reveal paths on `doorward up --replicas 2
--vault-nodes 3` (the figures of docs/operations.md "Sizing").

    .venv/bin/python bench/replica_bench.py [--seconds 10] [--concurrency 4]

Starts the replicated stack exactly as the failover e2e does (embedded PostgreSQL, a 3-node
OpenBao raft cluster, two processes of every service and of the gateway, on free ports, stopped
by PID at the end), builds the same small organisation, then for --seconds each:
  1. board (`myJobs`) through ONE gateway replica (its subgraphs still balanced over two);
  2. board through the balancer (both gateways);
  3. reveal path (requestSecretAccess through the balancer + POST revealUrl), both replicas.
Prints requests a second, p50/p99 latency and the per-replica share (total / replicas).
On a shared 2-core machine every process competes for the same cores: the figures bound what
one replica handles from below; they do not show scaling.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.conftest import start_up, stop_up, wait_for_gateway
from tests.e2e.test_failover import (
    BOARD,
    DOOR_CODE,
    REQUEST,
    STEP,
    Replicated,
    _env,
    _gql,
    build_scene,
)


def run(seconds: float, concurrency: int, call: Callable[[int], bool]) -> dict[str, float]:
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            ok = call(i)
            took = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(took)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else 0.0,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1) if latencies else 0.0,
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="doorward-replica-bench-"))
    env = _env(root / "data")
    env["DOORWARD_ENV"] = "production"
    proc = start_up(env, root / "stack.log")
    try:
        gateway = f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql"
        one = f"http://127.0.0.1:{int(env['DOORWARD_GATEWAY_PORT']) + STEP}/graphql"
        wait_for_gateway(proc, gateway, root / "stack.log", 600)
        wait_for_gateway(proc, one, root / "stack.log", 120)
        scene = build_scene(Replicated(env, root / "data", root / "stack.log", proc.pid))
        techs = scene.techs
        jobs_of = {t.user_id: [j for j, a in scene.jobs.items() if a == t.user_id] for t in techs}
        clients = [httpx.Client(timeout=15) for _ in range(args.concurrency)]

        def board(url: str) -> Callable[[int], bool]:
            def call(i: int) -> bool:
                tech = techs[i % len(techs)]
                response = clients[i].post(
                    url, json={"query": BOARD}, headers={"authorization": f"Bearer {tech.token}"}
                )
                return response.status_code == 200 and "errors" not in response.json()

            return call

        def reveal(i: int) -> bool:
            tech = techs[i % len(techs)]
            job = jobs_of[tech.user_id][0]
            try:
                grant = _gql(gateway, REQUEST, {"w": job, "s": scene.secret}, tech.token)[
                    "requestSecretAccess"
                ]
            except RuntimeError:
                return False
            response = clients[i].post(
                grant["revealUrl"],
                json={"revealToken": grant["revealToken"]},
                headers={"authorization": f"Bearer {tech.token}"},
            )
            return response.status_code == 200 and response.json()["value"] == DOOR_CODE

        figures = {
            "board_one_gateway": run(args.seconds, args.concurrency, board(one)),
            "board_balanced_2": run(args.seconds, args.concurrency, board(gateway)),
            "reveal_balanced_2": run(args.seconds, args.concurrency, reveal),
        }
        for name in ("board_balanced_2", "reveal_balanced_2"):
            figures[name]["per_replica_per_second"] = round(figures[name]["per_second"] / 2, 1)
        print(json.dumps(figures, indent=2))
    finally:
        stop_up(proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
