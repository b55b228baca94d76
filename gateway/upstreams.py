"""The replicas of each subgraph: which one gets a request, which ones are healthy, and when a
failed request may go to another.

Balancing is round-robin over the replicas currently believed healthy. A replica is believed
down from the moment a request to it fails at the transport level (refused, reset, timed out)
or it answers 502/503/504, until its `/readyz` answers 200 again; `HealthChecker` asks every
replica's `/readyz` every second, so a replica that died is skipped within a second even before
a request finds out, and one that came back is used again as soon as it is ready.

Retries only where they are safe: a fetch that only reads (a query's fetches, and the
`_entities` fetches of any operation) is sent to the next replica when one fails; the root
fetch of a mutation is never sent twice (the first replica may have acted on it before dying),
its failure is the client's answer. If every replica is believed down, all are tried anyway
(health can lag behind a recovery) rather than failing without asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from gateway.transport import SubgraphTransport

log = logging.getLogger(__name__)

HEALTH_INTERVAL_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 1.0
# Answers that say "this replica cannot take it now" (a proxy's or a stopping server's).
RETRYABLE_STATUS = frozenset({502, 503, 504})


class UpstreamUnavailable(Exception):
    """No replica of a subgraph answered (the executor reports the subgraph unavailable)."""


@dataclass
class Replica:
    url: str
    transport: httpx.AsyncBaseTransport
    parsed: httpx.URL = field(init=False)
    healthy: bool = True
    failures: int = 0

    def __post_init__(self) -> None:
        self.parsed = httpx.URL(self.url)

    @property
    def ready_url(self) -> httpx.URL:
        return self.parsed.copy_with(path="/readyz", query=None)


class Upstream:
    """One subgraph's replicas (one or more URLs)."""

    def __init__(self, name: str, replicas: Sequence[Replica]) -> None:
        if not replicas:
            raise ValueError(f"subgraph {name} has no URL")
        self.name = name
        self.replicas = list(replicas)
        self._next = 0

    def order(self) -> list[Replica]:
        """The replicas to try for one request: healthy ones first, starting round-robin."""
        n = len(self.replicas)
        start = self._next % n
        self._next = (self._next + 1) % n
        turn = self.replicas[start:] + self.replicas[:start]
        return [r for r in turn if r.healthy] + [r for r in turn if not r.healthy]

    def mark(self, replica: Replica, healthy: bool) -> None:
        if replica.healthy and not healthy:
            log.warning(
                "subgraph replica marked down",
                extra={"fields": {"subgraph": self.name, "url": replica.url}},
            )
        elif healthy and not replica.healthy:
            log.info(
                "subgraph replica back",
                extra={"fields": {"subgraph": self.name, "url": replica.url}},
            )
        replica.healthy = healthy
        replica.failures = 0 if healthy else replica.failures + 1

    async def post(
        self,
        payload: bytes,
        headers: Mapping[str, str],
        timeouts: Mapping[str, float | None],
        *,
        retry: bool,
    ) -> bytes:
        """POST to one replica; on a transport failure or a 502/503/504, to the next one when
        `retry` (reads only). Raises UpstreamUnavailable when no replica answered."""
        attempts = self.order()
        if not retry:
            attempts = attempts[:1]
        last: Exception | None = None
        for replica in attempts:
            try:
                status, content = await _post(replica, payload, headers, timeouts)
            except httpx.TransportError as exc:
                self.mark(replica, False)
                last = exc
                continue
            if status in RETRYABLE_STATUS:
                self.mark(replica, False)
                last = UpstreamUnavailable(f"{self.name} answered {status}")
                continue
            return content
        raise UpstreamUnavailable(f"no replica of {self.name} answered") from last


async def _post(
    replica: Replica,
    payload: bytes,
    headers: Mapping[str, str],
    timeouts: Mapping[str, float | None],
) -> tuple[int, bytes]:
    transport = replica.transport
    if isinstance(transport, SubgraphTransport):  # the gateway's lean connections
        return await transport.post(replica.parsed, payload, headers)
    request = httpx.Request(
        "POST", replica.parsed, content=payload, headers=headers,
        extensions={"timeout": dict(timeouts)},
    )  # fmt: skip
    response = await transport.handle_async_request(request)
    try:
        content = await response.aread()
    finally:
        await response.aclose()
    return response.status_code, content


class HealthChecker:
    """Asks every replica's /readyz every `interval` seconds (in the gateway's event loop)."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        interval: float = HEALTH_INTERVAL_SECONDS,
        timeout: float = HEALTH_TIMEOUT_SECONDS,
    ) -> None:
        self.upstreams = upstreams
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None

    async def check_once(self, client: httpx.AsyncClient) -> None:
        checks = [
            self._check(client, upstream, replica)
            for upstream in self.upstreams.values()
            for replica in upstream.replicas
        ]
        await asyncio.gather(*checks)

    async def _check(self, client: httpx.AsyncClient, upstream: Upstream, replica: Replica) -> None:
        try:
            response = await client.get(replica.ready_url, timeout=self.timeout)
            healthy = response.status_code == 200
        except httpx.HTTPError:
            healthy = False
        upstream.mark(replica, healthy)

    async def _run(self) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                started = time.monotonic()
                try:
                    await self.check_once(client)
                except Exception:  # never let the checker die; log and go on
                    log.exception("subgraph health check failed")
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        # With one replica per subgraph there is nothing to choose between: no checks.
        if any(len(u.replicas) > 1 for u in self.upstreams.values()):
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="gateway-health-checks"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
