"""Single-use gateway nonces across every replica of a subgraph (doorward_kit/gateway_signature).

Each replica remembers the nonces it has seen, but a balancer may hand a captured copy of a
signed request to another replica, which has not. So each nonce is also claimed in the
subgraph's own PostgreSQL, which every replica shares: `INSERT ... ON CONFLICT DO NOTHING` on
the table `gateway_nonces` (primary key: the nonce), and only the replica whose INSERT added the
row serves the request. Rows are kept until the signature is stale on every clock (the later of
the database's now and the signed time, plus twice the window) and pruned by age.

Cost: one INSERT on a small pool of its own (~0.4 ms on the test machine; see
docs/operations.md), on a connection the claims keep between them (no checkout per claim),
and nothing when a connection goes back to the pool (_keep_session).
Claims that arrive while another claim's INSERT is on its way wait for it and then go
together, as one INSERT of all their nonces (a group commit): under concurrency a subgraph
request used to cost one pool checkout, one round trip and one commit of its own here.
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
from collections.abc import AsyncIterator

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
# Several nonces in one statement; RETURNING says which rows this statement added.
_CLAIM_MANY = (
    f"INSERT INTO {TABLE} (nonce, expires_at) "  # noqa: S608 (a constant, no input)
    "SELECT n, GREATEST(now(), to_timestamp(t)) + make_interval(secs => k) "
    "FROM unnest($1::text[], $2::float8[], $3::float8[]) AS c(n, t, k) "
    "ON CONFLICT (nonce) DO NOTHING RETURNING nonce"
)
_PRUNE = f"DELETE FROM {TABLE} WHERE expires_at < now()"  # noqa: S608
# A lost or refused connection, or a database that cannot take the row, however reported.
# (A connection the server ended while the claims kept it fails its next statement with
# asyncpg's InternalClientError, "another operation is in progress".)
_FAILED = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


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


def _closed(conn: asyncpg.Connection) -> bool:
    """Whether a kept pool connection is closed; one the pool has taken back (its connection
    was lost, and asyncpg returns the holder to the pool) is closed too."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # "connection has been released back to the pool"
        return True


def _not_claimed(exc: BaseException) -> None:
    log.error(
        "gateway nonce not claimed; refusing the request",
        extra={"fields": {"error": type(exc).__name__}},
    )


def _refuse(claims: list[_Waiting]) -> None:
    for claim in claims:
        if not claim.future.done():
            claim.future.set_exception(unavailable())


def unavailable() -> DoorwardError:
    return DoorwardError(ErrorCode.UNAVAILABLE, "the replay guard is unavailable; try again")


class _Waiting:
    """A claim waiting for the next batch."""

    __slots__ = ("future", "keep_seconds", "nonce", "stamp")

    def __init__(self, nonce: str, stamp: float, keep_seconds: float) -> None:
        self.nonce = nonce
        self.stamp = stamp
        self.keep_seconds = keep_seconds
        self.future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()


class PostgresNonceLedger:
    """A NonceLedger in the subgraph's database (`db_url`: the service's SQLAlchemy URL).

    One claim's statement at a time: a claim arriving meanwhile waits, and all that waited go
    in the next statement (run by a task of the ledger's own, so a request cancelled while its
    claim is on its way never strands the others). Each nonce is still good once: the first
    claim of it anywhere, in a batch or alone, is the one whose row the statement added."""

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
        # The pool's connection the claims run on (_claimer), between claims too.
        self._held: asyncpg.Connection | None = None
        self._opening = asyncio.Lock()
        self._last_prune = time.monotonic()
        self._pruning: asyncio.Task[int] | None = None
        # A claim's statement is on its way (the caller's own, or the batch task's).
        self._busy = False
        self._waiting: list[_Waiting] = []
        self._batches: asyncio.Task[None] | None = None
        self._closed = False

    async def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        # The claims keep one (_claimer); a prune needs another.
                        max_size=max(2, self._pool_size),
                        timeout=self._timeout,
                        reset=_keep_session,
                        server_settings={
                            "synchronous_commit": "off",
                            "application_name": "doorward-nonce-ledger",
                        },
                    )
        return self._pool

    async def claim(self, nonce: str, stamp: int, keep_seconds: float) -> bool:
        if self._busy:
            # Another claim's INSERT is on its way: this one goes with the next batch.
            waiting = _Waiting(nonce, float(stamp), float(keep_seconds))
            self._waiting.append(waiting)
            return await waiting.future
        self._busy = True
        try:
            return await self._claim_one(nonce, float(stamp), float(keep_seconds))
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """After a statement: the claims that waited go next, in a task of the ledger's."""
        if not self._waiting:
            self._busy = False
        elif self._closed:
            self._busy = False
            self._refuse_waiting()
        else:
            self._batches = asyncio.get_running_loop().create_task(self._run_batches())

    async def _claimer(self) -> asyncpg.Connection:
        """The connection the claims run on, kept out of the pool between claims. Claims go one
        statement at a time (`_busy`), so one connection serves them all: a pool checkout and
        return per claim (asyncpg's acquire waits under a timeout of its own) was about a
        fifth of the ledger's CPU per subgraph request. Pruning takes another connection
        from the pool."""
        held = self._held
        if held is None or _closed(held):
            pool = await self._ready()
            held = self._held = await pool.acquire(timeout=self._timeout)
        return held

    async def _drop_claimer(self) -> None:
        """After a claim that failed or was cancelled mid-statement: the connection may be in
        any state, so it is closed and the next claim takes a fresh one."""
        held, self._held = self._held, None
        if held is not None and self._pool is not None:
            with contextlib.suppress(Exception):
                held.terminate()
                await self._pool.release(held)

    @contextlib.asynccontextmanager
    async def _claiming(self) -> AsyncIterator[asyncpg.Connection]:
        """The kept connection for one claim statement. Fails closed: a database that cannot
        answer is UNAVAILABLE, and after any failure or cancellation mid-statement the
        connection is dropped (the next claim takes a fresh one)."""
        try:
            yield await self._claimer()
        except _FAILED as exc:
            await self._drop_claimer()
            _not_claimed(exc)
            raise unavailable() from None
        except BaseException:
            await self._drop_claimer()
            raise
        self._maybe_prune()

    async def _claim_one(self, nonce: str, stamp: float, keep_seconds: float) -> bool:
        async with self._claiming() as conn:
            status = await conn.execute(_CLAIM, nonce, stamp, keep_seconds, timeout=self._timeout)
        return status == "INSERT 0 1"

    async def _claim_many(self, batch: list[_Waiting]) -> set[str]:
        """The nonces of `batch` whose rows this statement added."""
        async with self._claiming() as conn:
            rows = await conn.fetch(
                _CLAIM_MANY,
                [w.nonce for w in batch],
                [w.stamp for w in batch],
                [w.keep_seconds for w in batch],
                timeout=self._timeout,
            )
        return {row[0] for row in rows}

    async def _run_batches(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                # A waiter cancelled meanwhile (its client gone) is not served: no claim needed.
                batch = [w for w in self._waiting if not w.future.done()]
                self._waiting = []
                if not batch:
                    continue
                try:
                    if len(batch) == 1:
                        only = batch[0]
                        won = await self._claim_one(only.nonce, only.stamp, only.keep_seconds)
                        added = {only.nonce} if won else set()
                    else:
                        added = await self._claim_many(batch)
                except Exception as exc:
                    if not isinstance(exc, DoorwardError):
                        log.exception("gateway nonces not claimed; refusing the requests")
                    _refuse(batch)
                    continue
                for waiting in batch:
                    # The same nonce twice in one batch: its first claim has it, not the rest.
                    won = waiting.nonce in added
                    added.discard(waiting.nonce)
                    if not waiting.future.done():
                        waiting.future.set_result(won)
        finally:
            self._busy = False
            # Closed (or cancelled) with claims still waiting: refused, never served unchecked.
            _refuse(batch)
            self._refuse_waiting()

    def _refuse_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        _refuse(waiting)

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
        self._closed = True
        if self._batches is not None and not self._batches.done():
            self._batches.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._batches
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pruning
        if self._pool is not None:
            held, self._held = self._held, None
            if held is not None:  # the pool's close waits for every connection to be back
                with contextlib.suppress(Exception):
                    await self._pool.release(held)
            await self._pool.close()
            self._pool = None
