"""In-process fan-out of session changes to every connected watcher (the other processes'
session guards), with acknowledgements: `publish` returns once every watcher connected at that
moment has acked, or the timeout passed (laggards are disconnected, which empties their cache).
No gRPC here: the servicer adapts a Watcher to the WatchSessions stream."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionChange:
    user_id: str
    org_id: str
    epoch: int
    deactivated: bool = False
    # Set when only one session family ended (logout, refresh-token reuse).
    session_id: str = ""


@dataclass
class Watcher:
    name: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    queue: asyncio.Queue[tuple[str, SessionChange] | None] = field(default_factory=asyncio.Queue)
    pending: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def close(self) -> None:
        self.queue.put_nowait(None)


class SessionHub:
    def __init__(self) -> None:
        self._watchers: dict[str, Watcher] = {}

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def register(self, name: str) -> Watcher:
        watcher = Watcher(name=name[:64])
        self._watchers[watcher.id] = watcher
        return watcher

    def unregister(self, watcher: Watcher) -> None:
        self._watchers.pop(watcher.id, None)
        for future in watcher.pending.values():
            if not future.done():
                # A watcher that is gone has dropped its cache with its stream.
                future.set_result(None)
        watcher.pending.clear()

    def ack(self, watcher: Watcher, event_id: str) -> None:
        future = watcher.pending.pop(event_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def publish(self, change: SessionChange, ack_seconds: float) -> bool:
        """True when every connected watcher acked in time."""
        loop = asyncio.get_running_loop()
        futures: list[tuple[Watcher, asyncio.Future[None]]] = []
        for watcher in list(self._watchers.values()):
            event_id = uuid.uuid4().hex
            future: asyncio.Future[None] = loop.create_future()
            watcher.pending[event_id] = future
            watcher.queue.put_nowait((event_id, change))
            futures.append((watcher, future))
        if not futures:
            return True
        _, not_done = await asyncio.wait([f for _, f in futures], timeout=ack_seconds)
        if not not_done:
            return True
        for watcher, future in futures:
            if future in not_done:
                log.warning(
                    "session watcher did not ack in time; disconnecting it",
                    extra={"fields": {"watcher": watcher.name}},
                )
                watcher.close()
                self.unregister(watcher)
        return False

    def close_all(self) -> None:
        for watcher in list(self._watchers.values()):
            watcher.close()
            self.unregister(watcher)
