"""Issue 15, finding P3: the gateways' rate-limit shares follow the live replica count.

Each gateway enforced 1/DOORWARD_GATEWAY_REPLICAS of the limit, a fixed number: after an
autoscaler went from 2 to 3 gateways, the three together let 1.5 times the limit through. Now
each counts its peers (DNS of a headless Service) and re-divides."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deploy.kustomize import render
from gateway.limits import RateLimiter
from gateway.replica_count import ReplicaFollower, dns_peers

pytestmark = pytest.mark.unit

RATE, BURST = 6.0, 6


class Peers:
    """The DNS answer: how many gateway pods are ready (what the autoscaler changes)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.failing = False

    async def __call__(self) -> int:
        if self.failing:
            raise OSError("no DNS")
        return self.count


def let_through(gateways: list[RateLimiter], now: float, tries: int = 20) -> int:
    """A client hammering: its requests spread over every gateway (the balancer's turn)."""
    return sum(g.allow("user:u", now=now) for _ in range(tries) for g in gateways)


async def test_scaling_from_two_to_three_gateways_keeps_the_sum_at_the_limit() -> None:
    peers = Peers(2)
    gateways = [RateLimiter(RATE, BURST, replicas=2) for _ in range(2)]
    followers = [ReplicaFollower(g, peers) for g in gateways]
    assert await asyncio.gather(*(f.refresh() for f in followers)) == [2, 2]
    assert let_through(gateways, now=0.0) == BURST
    # The autoscaler adds a third gateway; it starts with the configured guess (2).
    peers.count = 3
    third = RateLimiter(RATE, BURST, replicas=2)
    gateways.append(third)
    followers.append(ReplicaFollower(third, peers))
    await asyncio.gather(*(f.refresh() for f in followers))
    assert [g.replicas for g in gateways] == [3, 3, 3]
    # A full refill later, the three together: the limit, not 1.5 times it (what the fixed
    # count of 2 gave: 3 + 3 + 3 = 9).
    assert let_through(gateways, now=10.0) == BURST
    # One second: the rate, over all of them.
    assert let_through(gateways, now=11.0) == RATE


async def test_scaling_down_gives_the_honest_client_its_whole_limit_back() -> None:
    peers = Peers(3)
    gateways = [RateLimiter(RATE, BURST, replicas=3) for _ in range(3)]
    peers.count = 2
    gone = gateways.pop()
    del gone
    for g in gateways:
        await ReplicaFollower(g, peers).refresh()
    assert let_through(gateways, now=10.0) == BURST  # 3 + 3, not 2 + 2


async def test_a_failed_lookup_keeps_the_last_count_never_alone() -> None:
    peers = Peers(3)
    gateway = RateLimiter(RATE, BURST, replicas=2)
    follower = ReplicaFollower(gateway, peers)
    assert await follower.refresh() == 3
    peers.failing = True
    assert await follower.refresh() == 3  # not 1: that would triple this gateway's share
    assert gateway.burst == BURST / 3
    peers.failing, peers.count = False, 0
    assert await follower.refresh() == 1  # no answer yet, but this one serves


async def test_the_follower_runs_in_the_background() -> None:
    peers = Peers(2)
    gateway = RateLimiter(RATE, BURST, replicas=1)
    follower = ReplicaFollower(gateway, peers, interval=0.01)
    follower.start()
    try:
        for _ in range(200):
            if gateway.replicas == 2:
                break
            await asyncio.sleep(0.01)
        assert gateway.replicas == 2
        peers.count = 4
        for _ in range(200):
            if gateway.replicas == 4:
                break
            await asyncio.sleep(0.01)
        assert gateway.replicas == 4
    finally:
        await follower.stop()


async def test_dns_peers_counts_distinct_addresses() -> None:
    assert await dns_peers("localhost")() >= 1


def test_kubernetes_names_a_headless_service_of_ready_gateways() -> None:
    root = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "overlays" / "external-postgres"
    objs = list(render(root))
    (config,) = [
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "doorward-stack"
    ]
    name = config["data"]["DOORWARD_GATEWAY_PEERS_DNS"]
    (service,) = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == name]
    (gateway,) = [
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway"
    ]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"].get("publishNotReadyAddresses", False) is False
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]
