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
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

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


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
    ) -> None:
        self.engine: AsyncEngine = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, echo=echo
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
