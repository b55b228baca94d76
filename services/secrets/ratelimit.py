"""Per-user request limits on the value routes and on grants and upload slots.

`SharedRateLimiter` (what the service runs) counts in the secrets database, so a user's limit
holds across every replica however the requests are spread over them: a sliding window
approximated from two fixed windows (this one's count plus the previous one's, weighted by how
much of it still overlaps), one upsert per request. Refused requests count too: hammering does
not buy an earlier retry. `RateLimiter` is the same rule in one process's memory (tests, tools).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError, ErrorCode

# Idle users' counters are dropped this often (by whichever replica gets there).
PRUNE_SECONDS = 300.0


def _limited() -> DoorwardError:
    return DoorwardError(ErrorCode.RATE_LIMITED, "too many requests; try again in a minute")


class Limiter(Protocol):
    async def acquire(self, key: str) -> None:
        """Count one request of `key`; raise RATE_LIMITED when over the limit."""


class RateLimiter:
    """At most `limit` requests per user in any `window` seconds (sliding window)."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    async def acquire(self, key: str) -> None:
        self.check(key)

    def check(self, key: str) -> None:
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            raise _limited()
        hits.append(now)
        if len(self._hits) > 10_000:
            self._forget(now)

    def _forget(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
            del self._hits[key]


class SharedRateLimiter:
    """At most about `limit` requests per key in any `window` seconds, across replicas."""

    def __init__(
        self,
        db: Database,
        name: str,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.name = name
        self.limit = limit
        self.window = window
        self._clock = clock
        self._next_prune = 0.0

    async def acquire(self, key: str) -> None:
        from services.secrets import repository as repo

        now = self._clock()
        start = int(now // self.window * self.window)
        previous = start - int(self.window)
        async with self.db.unit_of_work() as session:
            hits, before = await repo.count_hit(session, f"{self.name}:{key}", start, previous)
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_SECONDS
                await repo.forget_rate_windows(session, previous)
        overlap = 1.0 - (now - start) / self.window
        if hits + before * overlap > self.limit:
            raise _limited()
