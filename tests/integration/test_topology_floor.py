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

            # Without secrets, the whole path waits (workorders' call waits for the channel);
            # the path beside it still answers.
            skeleton.children["secrets"].kill()
            skeleton.children["secrets"].wait(10)
            with pytest.raises(httpx.ReadTimeout):
                await client.post(skeleton.url, content=b"{}", timeout=2)
            assert (await client.post(skeleton.beside_url, content=b"{}")).status_code == 200

            # Without identity, the gateway answers 502, not the board.
            skeleton.children["identity"].kill()
            skeleton.children["identity"].wait(10)
            answer = await client.post(skeleton.beside_url, content=b"{}")
            assert answer.status_code == 502
    assert all(child.returncode is not None for child in skeleton.children.values())


async def test_measure_times_both_paths_and_counts_cpu_per_board() -> None:
    figures = await measure(Bodies.synthetic(), sequential=5, concurrency=2, seconds=0.5, warm=0.1)
    assert figures["p99"] >= figures["p50"] > 0
    assert figures["beside p50"] > 0
    assert figures["rps"] > 0
    # secrets served the whole path's calls: it spent CPU on them.
    assert figures["cpu secrets"] > 0
    assert figures["cpu total"] == pytest.approx(
        sum(v for k, v in figures.items() if k.startswith("cpu ") and k != "cpu total")
    )
