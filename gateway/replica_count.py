"""How many gateways share the rate limit, followed live (issue 15, P3).

Each gateway enforces 1/N of the configured per-user rate and burst (gateway/limits.py
RateLimiter), so N gateways together never let more through than the limit. A fixed N
(DOORWARD_GATEWAY_REPLICAS) is wrong as soon as an autoscaler adds or removes gateways: with
more, the sum exceeds the limit; with fewer, honest users are refused early. With
DOORWARD_GATEWAY_PEERS_DNS (on Kubernetes a headless Service of the gateway pods, whose
addresses are exactly the ready gateways) each gateway counts its peers every few seconds and
re-divides. A failed lookup keeps the last count (never falls back to "alone", which would
multiply the budget); an empty answer counts as one (this gateway is serving).

Between a scale-up and the next count the sum may exceed the limit by the new pod's share for
up to REFRESH_SECONDS; rate limits are about abuse, not exact accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from gateway.limits import RateLimiter

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0

PeerCount = Callable[[], Awaitable[int]]


def dns_peers(name: str) -> PeerCount:
    """The number of distinct addresses `name` resolves to (one per ready gateway pod)."""

    async def count() -> int:
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
        return len({info[4][0] for info in infos})

    return count


class ReplicaFollower:
    """Keeps `limiter.replicas` at the live count of gateways."""

    def __init__(
        self, limiter: RateLimiter, count: PeerCount, *, interval: float = REFRESH_SECONDS
    ) -> None:
        self.limiter = limiter
        self.count = count
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        try:
            async with asyncio.timeout(self.interval):
                found = await self.count()
        except (OSError, TimeoutError) as exc:
            log.warning(
                "gateway peers not counted; keeping the last count",
                extra={"fields": {"error": type(exc).__name__, "replicas": self.limiter.replicas}},
            )
            return self.limiter.replicas
        if found != self.limiter.replicas:
            log.info("gateway replicas changed", extra={"fields": {"replicas": max(1, found)}})
        self.limiter.replicas = max(1, found)
        return self.limiter.replicas

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="gateway-peers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
