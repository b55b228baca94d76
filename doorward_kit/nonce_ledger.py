"""Single-use gateway nonces across every replica of a subgraph (doorward_kit/gateway_signature).

Each replica remembers the nonces it has seen, but a balancer may hand a captured copy of a
signed request to another replica, which has not. So each nonce is also claimed in the
subgraph's own PostgreSQL, which every replica shares: `INSERT ... ON CONFLICT DO NOTHING` on
the table `gateway_nonces` (primary key: the nonce), and only the replica whose INSERT added the
row serves the request. Rows are kept until the signature is stale on every clock (the later of
the database's now and the signed time, plus twice the window) and pruned by age.

Cost: one INSERT on a small pool of its own (~0.4 ms on the test machine; see
docs/operations.md), and nothing when the connection goes back to the pool (_keep_session).
The pool's sessions run with synchronous_commit off: the row is visible to every other session
at once (what the claim needs), only its durability waits for the WAL writer (~0.2 s), so a
PostgreSQL crash forgets at most the last fraction of a second of nonces, whose signatures are
all stale 30 s later anyway.

Fails closed: when the database cannot answer, the request is refused (UNAVAILABLE), never
served unchecked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from doorward_kit.errors import DoorwardError, ErrorCode

log = logging.getLogger(__name__)

TABLE = "gateway_nonces"
# Deleting forgotten nonces: at most this often per replica (a few thousand rows at most).
PRUNE_SECONDS = 30.0
_CLAIM = (
    f"INSERT INTO {TABLE} (nonce, expires_at) "  # noqa: S608 (a constant, no input)
    "VALUES ($1, GREATEST(now(), to_timestamp($2)) + make_interval(secs => $3)) "
    "ON CONFLICT (nonce) DO NOTHING"
)
_PRUNE = f"DELETE FROM {TABLE} WHERE expires_at < now()"  # noqa: S608
# A lost or refused connection, or a database that cannot take the row, however reported.
_FAILED = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy, the services' db_url) -> what asyncpg takes."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


async def _keep_session(_: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing. asyncpg's default sends `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` whenever a connection goes back,
    a second round trip per claim (per subgraph request). These connections only ever run one
    autocommit statement (the claim or the prune): no transaction, cursor, lock, LISTEN or SET
    is ever left to undo. asyncpg still rolls back a transaction left open before calling this,
    so even a connection released mid-transaction would not carry it over."""
    return None


def unavailable() -> DoorwardError:
    return DoorwardError(ErrorCode.UNAVAILABLE, "the replay guard is unavailable; try again")


class PostgresNonceLedger:
    """A NonceLedger in the subgraph's database (`db_url`: the service's SQLAlchemy URL)."""

    def __init__(
        self,
        db_url: str,
        *,
        pool_size: int = 4,
        # As long as the gateway waits for a subgraph (its default subgraph timeout): on a busy
        # machine an INSERT may take a while, and a refusal here is a failed request.
        timeout: float = 5.0,
        prune_seconds: float = PRUNE_SECONDS,
    ) -> None:
        self._dsn = asyncpg_dsn(db_url)
        self._pool_size = pool_size
        self._timeout = timeout
        self._prune_seconds = prune_seconds
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._last_prune = time.monotonic()
        self._pruning: asyncio.Task[int] | None = None

    async def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=self._pool_size,
                        timeout=self._timeout,
                        reset=_keep_session,
                        server_settings={
                            "synchronous_commit": "off",
                            "application_name": "doorward-nonce-ledger",
                        },
                    )
        return self._pool

    async def claim(self, nonce: str, stamp: int, keep_seconds: float) -> bool:
        try:
            pool = await self._ready()
            async with pool.acquire(timeout=self._timeout) as conn:
                status = await conn.execute(
                    _CLAIM, nonce, float(stamp), float(keep_seconds), timeout=self._timeout
                )
        except _FAILED as exc:
            log.error(
                "gateway nonce not claimed; refusing the request",
                extra={"fields": {"error": type(exc).__name__}},
            )
            raise unavailable() from None
        self._maybe_prune()
        return status == "INSERT 0 1"

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self._prune_seconds:
            return
        if self._pruning is not None and not self._pruning.done():
            return
        self._last_prune = now
        self._pruning = asyncio.get_running_loop().create_task(self.prune())

    async def prune(self) -> int:
        """Forget the nonces whose signatures are stale everywhere; returns how many."""
        try:
            pool = await self._ready()
            async with pool.acquire(timeout=self._timeout) as conn:
                status = await conn.execute(_PRUNE, timeout=self._timeout)
        except _FAILED as exc:
            log.warning(
                "gateway nonces not pruned", extra={"fields": {"error": type(exc).__name__}}
            )
            return 0
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pruning
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
