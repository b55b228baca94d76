"""bench/topology_floor.py's skeleton is the board's real path: the gateway's answer is the three
subgraphs' answers, workorders' only after its mutual-TLS gRPC call to secrets came back, and
every process it started is gone afterwards."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from bench.topology_floor import Bodies, measure, running

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child not yet reaped is a zombie: it runs nothing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


async def test_the_gateway_answers_what_the_three_subgraphs_answered() -> None:
    bodies = Bodies.synthetic()
    with running(bodies) as (url, pids):
        assert set(pids) == {"gateway", "workorders", "identity", "audit", "secrets"}
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(300):
                try:
                    answer = await client.post(url, content=b"{}")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the skeleton did not answer")
    assert answer.status_code == 200
    expected = b",".join((bodies.workorders_answer, bodies.identity_answer, bodies.audit_answer))
    assert answer.content == b"[" + expected + b"]"
    assert not [role for role, pid in pids.items() if _alive(pid)]


async def test_measure_prints_latency_throughput_and_cpu_per_board() -> None:
    figures = await measure(Bodies.synthetic(), sequential=5, concurrency=2, seconds=0.5, warm=0.1)
    assert figures["p99"] >= figures["p50"] > 0
    assert figures["rps"] > 0
    assert figures["cpu total"] == pytest.approx(
        sum(v for k, v in figures.items() if k.startswith("cpu ") and k != "cpu total")
    )
