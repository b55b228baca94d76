"""Session changes across identity's replicas: PostgreSQL LISTEN/NOTIFY on identity's database.

A watcher (another process's session guard) streams from one identity replica; a user may be
deactivated on another. So a replica that publishes a change also NOTIFYs it; every other
replica, listening, hands it to its own watchers (SessionHub.publish, which waits for their
acks) and NOTIFYs its ack back. The publisher waits for the acks of every replica whose
listener is connected (seen in pg_stat_activity by its application_name), up to the ack
timeout, so deactivateUser returns once every watcher everywhere has dropped the user.

Fail-safe: a replica whose listening connection is down cannot learn of changes, so it drops
every watcher (their caches go with their streams) and refuses new ones (UNAVAILABLE) until it
listens again; guards then ask CheckSession for every request, which reads the database. It
drops them the moment asyncpg sees the connection close (a terminated backend, a restarted
server: its termination listener), not at the next probe; a connection that dies silently (a
cut network, no FIN) is found by the probe within PROBE_SECONDS + PROBE_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import asyncpg

from services.identity.session_hub import SessionChange, SessionHub

log = logging.getLogger(__name__)

CHANGES = "doorward_session_changes"
ACKS = "doorward_session_acks"
APP_PREFIX = "doorward-session-bus:"
RECONNECT_SECONDS = 0.5
# The liveness probe of the listening connection: the bound on staleness when it dies silently.
PROBE_SECONDS = 0.25
PROBE_TIMEOUT_SECONDS = 0.75
# A lost or refused connection, however asyncpg reports it.
_LOST = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy) -> what asyncpg.connect takes."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


class SessionBus:
    def __init__(self, dsn: str, hub: SessionHub, *, ack_seconds: float) -> None:
        self._dsn = dsn
        self._hub = hub
        self._ack_seconds = ack_seconds
        self.replica_id = uuid.uuid4().hex[:16]
        self._conn: asyncpg.Connection | None = None
        self._waiting: dict[str, tuple[set[str], asyncio.Event]] = {}
        self._listening = asyncio.Event()
        # Set when the listening connection is found dead: the run loop reconnects at once.
        self._deaf = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # One query at a time on the listening connection (asyncpg refuses a second one in flight,
        # and a probe refused that way would look like a lost connection).
        self._querying = asyncio.Lock()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    # ---- publishing -------------------------------------------------------------------------

    async def publish(self, change: SessionChange) -> bool:
        """This replica's watchers and every other listening replica's; True when all acked."""
        event_id = uuid.uuid4().hex
        conn = self._conn
        if conn is None or conn.is_closed():
            # Not listening: our own watchers were dropped; others cannot be told. The change is
            # in the database, which every guard without a live stream asks.
            return await self._hub.publish(change, ack_seconds=self._ack_seconds)
        try:
            async with self._querying:
                expected = await self._peers(conn)
                done = asyncio.Event()
                self._waiting[event_id] = (expected, done)
                payload = {"id": event_id, "origin": self.replica_id, **change.__dict__}
                await conn.execute("SELECT pg_notify($1, $2)", CHANGES, json.dumps(payload))
        except _LOST:
            self._waiting.pop(event_id, None)
            log.warning("session change not sent to the other identity replicas")
            return await self._hub.publish(change, ack_seconds=self._ack_seconds)
        try:
            local = await self._hub.publish(change, ack_seconds=self._ack_seconds)
            if expected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._ack_seconds):
                        await done.wait()
            remote = not self._waiting[event_id][0]
        finally:
            self._waiting.pop(event_id, None)
        if not remote:
            log.warning("an identity replica did not ack a session change in time")
        return local and remote

    async def _peers(self, conn: asyncpg.Connection) -> set[str]:
        rows = await conn.fetch(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE $1",
            APP_PREFIX + "%",
        )
        found = {str(r["application_name"])[len(APP_PREFIX) :] for r in rows}
        found.discard(self.replica_id)
        return found

    # ---- listening --------------------------------------------------------------------------

    def _on_change(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        message = json.loads(payload)
        if message.get("origin") == self.replica_id:
            return
        task = asyncio.get_running_loop().create_task(self._relay(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, message: dict[str, Any]) -> None:
        change = SessionChange(
            user_id=str(message.get("user_id", "")),
            org_id=str(message.get("org_id", "")),
            epoch=int(message.get("epoch", 0)),
            deactivated=bool(message.get("deactivated", False)),
            session_id=str(message.get("session_id", "")),
        )
        await self._hub.publish(change, ack_seconds=self._ack_seconds)
        # Acked even when a local watcher lagged: the hub has disconnected it (cache dropped).
        conn = self._conn
        if conn is not None and not conn.is_closed():
            ack = {"id": message["id"], "replica": self.replica_id}
            with contextlib.suppress(*_LOST):
                async with self._querying:
                    await conn.execute("SELECT pg_notify($1, $2)", ACKS, json.dumps(ack))

    def _on_ack(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        message = json.loads(payload)
        waiting = self._waiting.get(str(message.get("id")))
        if waiting is None:
            return
        expected, done = waiting
        expected.discard(str(message.get("replica")))
        if not expected:
            done.set()

    def _lost(self, conn: Any) -> None:
        """asyncpg's termination listener: the listening connection closed. Changes made on other
        replicas can no longer reach us, so no watcher may trust its cache from now on, not from
        the next probe on (a late call for an earlier connection changes nothing)."""
        if conn is self._conn:
            self._went_deaf()

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": APP_PREFIX + self.replica_id}
        )
        conn.add_termination_listener(self._lost)
        await conn.add_listener(CHANGES, self._on_change)
        await conn.add_listener(ACKS, self._on_ack)
        return conn

    async def run(self) -> None:
        """Listen forever (a background job); reconnect when the connection is lost."""
        try:
            while True:
                try:
                    self._conn = await self._connect()
                except _LOST as exc:
                    log.warning(
                        "session bus cannot listen yet",
                        extra={"fields": {"error": type(exc).__name__}},
                    )
                    await asyncio.sleep(RECONNECT_SECONDS)
                    continue
                conn = self._conn
                self._deaf.clear()
                self._listening.set()
                while self._listening.is_set() and self._conn is conn and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PROBE_SECONDS):
                            await self._deaf.wait()
                    if self._conn is not conn:
                        break  # the termination listener found it dead
                    try:
                        # Notices a connection that died without closing (a cut network).
                        async with self._querying:
                            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                                await conn.execute("SELECT 1")
                    except _LOST:
                        break
                if self._conn is conn:
                    self._went_deaf()
        finally:
            self._went_deaf()

    def _went_deaf(self) -> None:
        """Changes made elsewhere can no longer reach us: no watcher may trust its cache."""
        was = self._listening.is_set() or self._conn is not None
        self._listening.clear()
        self._deaf.set()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
        if was:
            log.warning("session bus stopped listening; dropping session watchers")
        self._hub.close_all()
