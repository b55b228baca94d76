"""SessionGuard backed by identity's gRPC: a deactivated user's tokens die everywhere at once.

Each check asks identity's CheckSession unless a recent positive answer is cached. The cache is
trusted only while the WatchSessions stream is live (identity's hello received, a heartbeat or
event within the last few seconds): identity pushes every session change (deactivation, epoch
bump, ended session family) and waits for this guard's ack before deactivateUser returns, and
the guard drops the user's cached answers and remembers the change (a tombstone) before it
acks. With the stream down, every check goes to identity (correct, only slower); with identity
unreachable, checks fail closed (UNAVAILABLE).

The stream is started lazily by the first check, runs in the background and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import grpc
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc

from doorward_kit.auth import HttpJwksSource, Principal, TokenVerifier
from doorward_kit.errors import unauthenticated
from doorward_kit.grpc import InternalAuth, ServiceChannel
from doorward_kit.settings import StackSettings

log = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 5.0
# identity sends a heartbeat every second; silence longer than this distrusts the cache.
STREAM_LIVENESS_SECONDS = 3.0
# Tokens live at most 10 minutes: a tombstone older than that protects nothing.
TOMBSTONE_SECONDS = 900.0
MAX_CACHE_ENTRIES = 100_000
WATCHER_METADATA_KEY = "x-doorward-watcher"

_CacheKey = tuple[str, str, int]


class IdentitySessionGuard:
    def __init__(
        self,
        channel: ServiceChannel,
        *,
        cache_ttl: float = CACHE_TTL_SECONDS,
        watcher_name: str | None = None,
        watch: bool = True,
    ) -> None:
        self._channel = channel
        self._stub = identity_pb2_grpc.IdentityStub(channel.channel)
        self._cache_ttl = cache_ttl
        self._watch_enabled = watch
        self._name = watcher_name or f"{socket.gethostname()}:{os.getpid()}"
        self._cache: dict[_CacheKey, float] = {}
        self._keys_by_user: dict[str, set[_CacheKey]] = {}
        # user id -> (lowest epoch still valid, when learnt); session id -> when it ended.
        self._min_epoch: dict[str, tuple[int, float]] = {}
        self._ended_sessions: dict[str, float] = {}
        # Bumped by every event and every disconnect: an answer fetched across one is not cached.
        self._generation = 0
        self._live = False
        self._last_seen = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ---- the check ----------------------------------------------------------------------------

    @property
    def stream_live(self) -> bool:
        return self._live and time.monotonic() - self._last_seen < STREAM_LIVENESS_SECONDS

    async def check(self, principal: Principal) -> None:
        self._ensure_watching()
        self._refuse_if_known_dead(principal)
        key = (principal.user_id, principal.session_id, principal.epoch)
        now = time.monotonic()
        if self.stream_live:
            expires = self._cache.get(key)
            if expires is not None and expires > now:
                return
        generation = self._generation
        response = await self._channel.call(
            self._stub.CheckSession,
            identity_pb2.CheckSessionRequest(
                user_id=principal.user_id,
                org_id=principal.org_id,
                epoch=principal.epoch,
                session_id=principal.session_id,
            ),
            what="identity",
        )
        if not response.valid:
            raise unauthenticated("this session has ended; log in again")
        # An event may have arrived while we asked: it wins over the (older) answer.
        self._refuse_if_known_dead(principal)
        if generation == self._generation and self.stream_live:
            self._remember(key, now + self._cache_ttl)

    def _refuse_if_known_dead(self, principal: Principal) -> None:
        tombstone = self._min_epoch.get(principal.user_id)
        if tombstone is not None and principal.epoch < tombstone[0]:
            raise unauthenticated("this session has ended; log in again")
        if principal.session_id in self._ended_sessions:
            raise unauthenticated("this session has ended; log in again")

    def _remember(self, key: _CacheKey, expires: float) -> None:
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._drop_cache()
        self._cache[key] = expires
        self._keys_by_user.setdefault(key[0], set()).add(key)

    def _drop_cache(self) -> None:
        self._cache.clear()
        self._keys_by_user.clear()

    def _forget_user(self, user_id: str) -> None:
        for key in self._keys_by_user.pop(user_id, set()):
            self._cache.pop(key, None)

    # ---- the watch stream ---------------------------------------------------------------------

    def _ensure_watching(self) -> None:
        if not self._watch_enabled or self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._watch_forever(), name="identity-session-watch"
            )

    def apply(self, event: identity_pb2.SessionEvent) -> None:
        """Act on one session change (before acking it)."""
        now = time.monotonic()
        self._generation += 1
        if event.user_id:
            previous = self._min_epoch.get(event.user_id)
            epoch = max(event.epoch, previous[0] if previous else 0)
            self._min_epoch[event.user_id] = (epoch, now)
            self._forget_user(event.user_id)
        if event.session_id:
            self._ended_sessions[event.session_id] = now
        self._prune_tombstones(now)

    def _prune_tombstones(self, now: float) -> None:
        cutoff = now - TOMBSTONE_SECONDS
        for user_id in [u for u, (_, at) in self._min_epoch.items() if at < cutoff]:
            del self._min_epoch[user_id]
        for session_id in [s for s, at in self._ended_sessions.items() if at < cutoff]:
            del self._ended_sessions[session_id]

    def _went_down(self) -> None:
        self._live = False
        self._generation += 1
        self._drop_cache()

    async def _watch_forever(self) -> None:
        delay = 0.2
        while not self._closed:
            try:
                await self._watch_once()
                delay = 0.2
            except asyncio.CancelledError:
                self._went_down()
                raise
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "identity session stream interrupted",
                    extra={"fields": {"code": error.code().name}},
                )
            except Exception:
                log.exception("identity session stream failed")
            self._went_down()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _watch_once(self) -> None:
        metadata = (*self._channel.metadata(), (WATCHER_METADATA_KEY, self._name))
        call = self._stub.WatchSessions(metadata=metadata)
        try:
            while True:
                event = await call.read()
                if event is grpc.aio.EOF:
                    return
                self._last_seen = time.monotonic()
                if event.hello:
                    # From now on identity waits for our acks: the cache may be trusted.
                    self._live = True
                    continue
                if event.heartbeat:
                    continue
                self.apply(event)
                await call.write(
                    identity_pb2.SessionAck(event_id=event.event_id, watcher=self._name)
                )
        finally:
            call.cancel()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._channel.close()


def build_token_verifier(
    stack: StackSettings, auth: InternalAuth
) -> tuple[TokenVerifier, IdentitySessionGuard]:
    """The verifier every process uses (`auth`: its own service identity); close the guard at
    shutdown."""
    channel = ServiceChannel(
        stack.grpc_target("identity"), auth, stack.grpc_deadline, server="identity"
    )
    guard = IdentitySessionGuard(channel)
    jwks = HttpJwksSource([url + "/.well-known/jwks.json" for url in stack.http_urls("identity")])
    return TokenVerifier(jwks, guard), guard
