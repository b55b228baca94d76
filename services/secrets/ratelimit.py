"""Per-user request limits on the value routes (in memory: one secrets process)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from doorward_kit.errors import DoorwardError, ErrorCode


class RateLimiter:
    """At most `limit` requests per user in any `window` seconds (sliding window)."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> None:
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            raise DoorwardError(ErrorCode.RATE_LIMITED, "too many requests; try again in a minute")
        hits.append(now)
        if len(self._hits) > 10_000:
            self._forget(now)

    def _forget(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
            del self._hits[key]
