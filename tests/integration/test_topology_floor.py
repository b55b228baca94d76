"""bench/topology_floor.py's skeleton is the board's real path: the gateway answers the board only
once workorders (after its mutual-TLS gRPC call to secrets), identity and audit all answered;
`/beside` is the same path with workorders not waiting for secrets; every process it started is
stopped on the way out."""

from __future__ import annotations

import httpx
import pytest

from bench.topology_floor import Bodies, measure, running, wait_until_answering

pytestmark = pytest.mark.integration


async def test_the_gateway_answers_only_once_the_whole_path_has() -> None:
    bodies = Bodies.synthetic()
    with running(bodies) as skeleton:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_until_answering(skeleton, client)
            answer = await client.post(skeleton.url, content=b"{}")
            assert answer.status_code == 200
            assert answer.content == bodies.gateway_answer

            # Without secrets, the whole path does not answer the board (workorders' call waits
            # for the channel, or fails if it went out before the channel saw secrets go); the
            # path beside it still does.
            skeleton.children["secrets"].kill()
            skeleton.children["secrets"].wait(10)
            try:
                answer = await client.post(skeleton.url, content=b"{}", timeout=2)
            except httpx.ReadTimeout:
                pass
            else:
                assert answer.status_code != 200
            assert (await client.post(skeleton.beside_url, content=b"{}")).status_code == 200

            # Without identity, the gateway answers 502, not the board.
            skeleton.children["identity"].kill()
            skeleton.children["identity"].wait(10)
            answer = await client.post(skeleton.beside_url, content=b"{}")
            assert answer.status_code == 502
    ended = {role: child.returncode for role, child in skeleton.children.items()}
    assert ended.pop("secrets") == -9 and ended.pop("identity") == -9  # this test's kills
    # The others by the skeleton's stop: uvicorn's graceful one (0), or a SIGTERM that came
    # before uvicorn had its handler (-15).
    assert all(code in (0, -15) for code in ended.values()), ended


async def test_measure_times_both_paths_and_counts_cpu_per_board() -> None:
    figures = await measure(Bodies.synthetic(), sequential=5, concurrency=2, seconds=1.0, warm=0.1)
    assert figures["p99"] >= figures["p50"] > 0
    assert figures["beside p50"] > 0
    assert figures["rps"] > 0
    roles = ("gateway", "workorders", "identity", "audit", "secrets")
    assert all(figures[f"cpu {r}"] >= 0 and figures[f"beside cpu {r}"] >= 0 for r in roles)
    assert figures["cpu total"] == pytest.approx(sum(figures[f"cpu {r}"] for r in roles))
