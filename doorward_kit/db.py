"""Async database access. Infrastructure owns the session and the transaction.

Adapters open `unit_of_work()`; it commits when the block succeeds and rolls back when it
raises. Services and repositories receive the session and never call commit().
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import asyncpg
from sqlalchemy import Connection, MetaData, event
from sqlalchemy.engine.base import ExceptionContextImpl
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.util import greenlet_spawn

from doorward_kit.telemetry import instrument_engine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Each service subclasses this with its own MetaData (one database per service)."""

    __abstract__ = True


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 2.0


def _check_on_checkout(engine: AsyncEngine, ping_after_idle: float) -> None:
    """Pessimistic disconnect handling, paid for only when it can matter.

    SQLAlchemy's pool_pre_ping pings on every checkout, and for asyncpg a ping is three round
    trips (BEGIN, an empty query, ROLLBACK: its pgbouncer-safe form), more than the query a
    hot read path checks the connection out for. Instead: a connection whose socket is known
    closed (a terminated backend, a restarted server: asyncpg notices the server's goodbye
    while the connection sits in the pool) is discarded without a round trip, and only one
    idle for longer than `ping_after_idle` is pinged. A connection that dies unannounced in
    the last moments before it is used fails that one statement; SQLAlchemy then invalidates
    the whole pool (every older connection is replaced), as with any disconnect."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["doorward_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = record.driver_connection
        if driver is None or driver.is_closed():
            raise DisconnectionError("the connection was closed while pooled")
        idle_since = record.info.get("doorward_idle_since")
        if idle_since is None or time.monotonic() - idle_since > ping_after_idle:
            try:
                dbapi_connection.ping()
            except Exception as error:
                raise DisconnectionError("the pooled connection did not answer") from error


# ---- reads on the asyncpg connection under SQLAlchemy's pool ----------------------------------
#
# The board's hot reads (issue 11) are a handful of fixed statements run on every request. Run
# through SQLAlchemy, each paid for more than PostgreSQL spent on it: the statement's cache key
# walked on every execution, an ExecutionContext, parameter processing, a greenlet hop, the
# dialect's own prepared-statement LRU, a Result of Row objects (a fifth of workorders' CPU per
# board). A RawReader runs such a statement as written ($1, $2 placeholders) on the asyncpg
# connection SQLAlchemy's pool checked out for the session or connection at hand: asyncpg's
# statement cache prepares each text once per connection, and rows come as asyncpg Records
# (tuples by position). Nothing else changes: the same pool and login role, the same
# transaction (or the same autocommit) as the statements SQLAlchemy runs beside it.
#
# Types: a parameter or column whose type asyncpg has no built-in codec for (varchar[], enums,
# domains) costs a catalogue query on every new connection (asyncpg's introspection; it showed
# up in workorders' profile). Raw statements therefore pass arrays as text[] and keep to
# built-in column types (text/varchar, bytea, bool, integers, timestamptz; json/jsonb have the
# codecs SQLAlchemy's dialect installs on connect).
#
# Tracing and observers: SQLAlchemy's cursor events are dispatched around every raw statement
# exactly as Connection does around its own (before_cursor_execute, after_cursor_execute,
# handle_error on failure), with the statement text and no cursor. So the OpenTelemetry
# instrumentation on the engine (doorward_kit.telemetry.instrument_engine) makes the same span
# for a raw statement as for any other (name, kind, db.* attributes, placeholders only, inside
# a trace only), and whatever else counts an engine's statements still sees them all.


class _RawExecution:
    """Stands in for SQLAlchemy's ExecutionContext in the cursor events of a raw statement:
    the listeners keep their per-statement state on it (the instrumentation's span)."""


class RawReader:
    """Fixed-text statements on the asyncpg connection under a SQLAlchemy connection. Reads,
    and the one kind of write that is a fixed statement run on every request or pass: an
    audit outbox's rows (`execute`; doorward_kit.audit_client). Use it while the connection
    is checked out, one statement at a time, as with the session."""

    __slots__ = ("_conn", "_driver")

    def __init__(self, conn: Connection, driver: asyncpg.Connection) -> None:
        self._conn = conn
        self._driver = driver

    @property
    def connection(self) -> Connection:
        """The SQLAlchemy connection whose driver connection this runs on (to bind an ORM
        session to the same connection)."""
        return self._conn

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run(self._driver.fetch, sql, args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run(self._driver.fetchrow, sql, args)
        return row

    async def execute(self, sql: str, *args: Any) -> str:
        """One statement that returns no rows (an INSERT, UPDATE or DELETE); its status tag.
        Outside a transaction (raw_reads) it commits at once; in one (raw_transaction, or a
        unit of work) it commits with it."""
        status: str = await self._run(self._driver.execute, sql, args)
        return status

    async def _run(self, method: Any, sql: str, args: tuple[Any, ...]) -> Any:
        conn = self._conn
        dispatch = conn.dispatch
        context = _RawExecution()
        # As Connection._exec_single_context: a listener may rewrite the statement.
        for before in dispatch.before_cursor_execute:
            sql, args = before(conn, None, sql, args, context, False)
        try:
            result = await method(sql, *args)
        except BaseException as error:
            # handle_error is the dialect's event (it ends the instrumentation's span as an
            # error). What its listeners return is not used: the error is raised as it came.
            handlers = conn.dialect.dispatch.handle_error
            if handlers:
                failed = ExceptionContextImpl(
                    error, None, conn.engine, conn.dialect, conn, None, sql, args,
                    cast(Any, context), False, False, False,
                )  # fmt: skip
                for handle in handlers:
                    handle(failed)
            raise
        dispatch.after_cursor_execute(conn, None, sql, args, context, False)
        return result


# What a repository's read may be handed: a session (a unit of work, or a request's autocommit
# session), a bare connection (Database.read_connection) or a RawReader (Database.raw_reads).
Reader = AsyncSession | AsyncConnection | RawReader


async def raw_reader(reader: Reader) -> RawReader:
    """A RawReader on the connection `reader` uses: an AsyncConnection itself, or the one an
    AsyncSession holds (checked out now if it has none yet); a RawReader is itself.

    A raw statement does not flush the session's pending objects first, just as a Core
    statement run through a session does not (SQLAlchemy autoflushes before ORM statements
    only): the reads moved here were Core statements.

    Inside a transaction (a unit of work) a raw statement must run in it, as SQLAlchemy's
    next statement would: the driver connection starts its transaction lazily, at the first
    statement SQLAlchemy runs, so if that has not happened yet it is started here (the
    BEGIN SQLAlchemy would send anyway). On an autocommit connection nothing is started."""
    if isinstance(reader, RawReader):
        return reader
    conn = await reader.connection() if isinstance(reader, AsyncSession) else reader
    sync = conn.sync_connection
    if sync is None:
        raise RuntimeError("the connection is not started")
    # A live connection's pooled connection is at hand without I/O (no greenlet hop); one
    # that was invalidated is replaced the way SQLAlchemy replaces it.
    fairy = sync.connection if not sync.invalidated else await conn.get_raw_connection()
    adapted: Any = fairy.dbapi_connection
    if adapted._transaction is None and not adapted.autocommit:
        await adapted._start_transaction()
    return RawReader(sync, fairy.driver_connection)


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int | None = None,
        echo: bool = False,
        ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
    ) -> None:
        # Last in, first out: the connection returned last is handed out next. First in,
        # first out (the pool's default) cycled every request through all pooled connections,
        # so at a few requests a second each sat idle past ping_after_idle and was pinged at
        # checkout (BEGIN, an empty query, ROLLBACK), and each had to prepare every statement
        # of the hot path for itself; with LIFO the busy ones stay warm and the rest wait.
        #
        # `max_overflow`: connections opened beyond `pool_size` under load and closed when
        # returned (None: as many again). The services pass 0 (every connection they open is
        # kept, up to DOORWARD_DB_POOL_SIZE): under 16 concurrent boards workorders needed more
        # than its 10 kept connections, and each overflow connection was a new PostgreSQL
        # backend (fork, authentication, every statement prepared again) closed moments later,
        # ~15 per 100 boards.
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size if max_overflow is None else max_overflow,
            pool_use_lifo=True,
            echo=echo,
        )
        _check_on_checkout(self.engine, ping_after_idle)
        instrument_engine(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        # The same pool in autocommit mode: asyncpg then sends no BEGIN and no COMMIT, so a
        # one-statement read is one round trip instead of three. Setting the mode on checkout
        # and back on return is local to the driver (no round trip).
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._reading = async_sessionmaker(
            self._autocommit, expire_on_commit=False, autoflush=False
        )

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """One transaction: commit on success, roll back on any error."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def reads(self) -> AsyncIterator[AsyncSession]:
        """A session for reads on a hot path, without a transaction: each statement runs on
        its own (autocommit), so use it where every answer comes from one statement, or where
        separate statements need not see one snapshot. Never for writes: they would commit one
        by one, and nothing here rolls them back."""
        async with self._reading() as session:
            yield session

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """reads() without an ORM session: a pooled connection in autocommit mode for Core
        statements. For the hottest one-statement reads (a token's session check on every
        request): building, running and closing an ORM Session around one Core select cost
        more CPU than the select. Same rules as reads(): never for writes."""
        async with self._autocommit.connect() as conn:
            yield conn

    @asynccontextmanager
    async def raw_reads(self) -> AsyncIterator[RawReader]:
        """read_connection() for statements of fixed SQL text on the asyncpg connection itself
        (RawReader): the same pool and role, and the same autocommit. It is a plain checkout:
        no transaction is ever begun on it (asyncpg runs each statement on its own unless told
        otherwise, and a raw statement never tells it), so the pool's reset on return sends
        nothing, and the isolation-level switch an AUTOCOMMIT connection does on checkout and
        again on return (a third of read_connection()'s CPU) is not needed. Never for
        writes but one fixed statement that commits on its own (a request's audit events:
        audit_client.OutboxBatch); several writes that belong together go in
        raw_transaction()."""
        conn = await greenlet_spawn(self.engine.sync_engine.connect)
        try:
            yield RawReader(conn, conn.connection.driver_connection)
        finally:
            await greenlet_spawn(conn.close)

    @asynccontextmanager
    async def raw_transaction(self) -> AsyncIterator[RawReader]:
        """raw_reads() in one transaction: committed when the block succeeds, rolled back when
        it raises or is cancelled. For a background pass of fixed statements (the audit
        outbox's locked SELECT and its DELETE): a Core connection's begin() around them cost
        more CPU than the statements. The transaction is the driver adapter's own, begun as
        SQLAlchemy begins it, so whatever the block leaves open is rolled back by the pool's
        reset when the connection goes back (as for any connection returned mid-transaction)."""
        conn = await greenlet_spawn(self.engine.sync_engine.connect)
        try:
            fairy = conn.connection
            adapted: Any = fairy.dbapi_connection
            await adapted._start_transaction()
            yield RawReader(conn, fairy.driver_connection)
            if adapted._transaction is not None:
                await adapted._call_and_discard(adapted._transaction.commit)
        finally:
            await greenlet_spawn(conn.close)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()


def run_migrations(migrations_dir: Path, url: str, *, role: str | None = None) -> None:
    """Upgrade the service's database to head (blocking; call before serving). With `role`,
    the migrations run after `SET ROLE role`, so what they create belongs to that role."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    # Alembic's ini interpolation treats % specially.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if role:
        config.set_main_option("doorward.role", role)
    command.upgrade(config, "head")


async def run_migrations_async(migrations_dir: Path, url: str) -> None:
    await asyncio.to_thread(run_migrations, migrations_dir, url)
