"""One database session per GraphQL request (issue 11).

A board request used to open four sessions: the page, then sites and secret ids in parallel,
then addresses. Each cost a pool checkout with its pre-ping, a BEGIN and a COMMIT besides its
query, and the three round trips of each were most of workorders' share of a board. Now every
read of a request (the query resolvers and all DataLoader batches) shares one session, opened
at the first read.

The session is used by one batch at a time (the lock): the DataLoaders of one level run as
parallel tasks, and an AsyncSession runs one statement at a time.

The session runs without a transaction (autocommit): asyncpg sends no BEGIN and no COMMIT,
two of a board's eight round trips to PostgreSQL. Nothing is lost by it: under READ COMMITTED
every statement saw its own snapshot anyway, so the levels of a request were never one
consistent view. What a read writes, the audit events of contact reads above all, is added to
the session and written when execution has finished and before the answer leaves
(`RequestTransaction`): one INSERT of all of them (SQLAlchemy splits a very large flush into
several, each committing on its own), before any of the data they cover is sent; if it fails,
the whole answer is replaced by an error (no contact data leaves unaudited; events already
written stay: on the trail once too often is the safe side), and if execution fails, nothing
is written.
The one other write of a read, the v2 re-seal of a v1 ciphertext in upgrade mode, is a single
guarded UPDATE that commits at once (it stores the same text in the stronger format).

Mutations keep their own unit of work (`_mutate`): a change commits, or is refused and audited,
on its own, before anything reads its result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any
from weakref import WeakKeyDictionary

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strawberry.extensions import SchemaExtension

from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError, ErrorCode

log = logging.getLogger(__name__)


_factories: WeakKeyDictionary[Database, async_sessionmaker[AsyncSession]] = WeakKeyDictionary()


def _autocommit_sessions(db: Database) -> async_sessionmaker[AsyncSession]:
    """Sessions on `db`'s pool in autocommit mode (set on checkout, no round trip), without
    autoflush: the audit events a read adds are written once, at the end (`finish`)."""
    factory = _factories.get(db)
    if factory is None:
        factory = async_sessionmaker(
            db.engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
            autoflush=False,
        )
        _factories[db] = factory
    return factory


class RequestUnit:
    """The request's one session, opened lazily; `finish` writes what the reads added (or
    drops it) and closes."""

    def __init__(self, db: Database) -> None:
        self._sessions = _autocommit_sessions(db)
        self._session: AsyncSession | None = None
        self._lock = asyncio.Lock()
        self._finished = False

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._lock:
            if self._finished:
                # A straggler after the answer was settled must not write outside it.
                raise DoorwardError(ErrorCode.UNAVAILABLE, "the request has already finished")
            if self._session is None:
                self._session = self._sessions()
            yield self._session

    @property
    def opened(self) -> bool:
        return self._session is not None

    async def finish(self, *, commit: bool) -> None:
        async with self._lock:
            self._finished = True
            session, self._session = self._session, None
        if session is None:
            return
        try:
            if commit:
                # The INSERT of the request's audit events (autocommit); the commit then sends
                # nothing, but tells the outbox sender (after_commit) there is work.
                await session.commit()
            else:
                await session.rollback()  # the pending events are dropped, unwritten
        finally:
            await session.close()


# The unit of the request being executed. Set by RequestTransaction around execution; resolvers
# and the DataLoader batches they start run in tasks that inherit it (asyncio copies the
# context into every task), and another request's tasks never see it.
_current: ContextVar[RequestUnit | None] = ContextVar("workorders_request_unit", default=None)


def current_unit() -> RequestUnit:
    unit = _current.get()
    if unit is None:
        raise RuntimeError("no request unit: the schema runs without RequestTransaction")
    return unit


class RequestTransaction(SchemaExtension):
    """Opens the request's unit around execution and settles it before the answer leaves."""

    async def on_execute(self) -> AsyncIterator[None]:
        runtime: Any = self.execution_context.context.services
        unit = RequestUnit(runtime.db)
        token = _current.set(unit)
        try:
            try:
                yield
            except BaseException:
                await unit.finish(commit=False)
                raise
            try:
                await unit.finish(commit=True)
            except Exception as error:
                # The type only: a driver's message can quote the statement's parameters.
                log.error(
                    "the request's transaction did not commit",
                    extra={"fields": {"error": type(error).__name__}},
                )
                self._fail()
        finally:
            _current.reset(token)

    def _fail(self) -> None:
        # strawberry returns the result object it already holds: change it in place. The
        # error extension (DoorwardErrors) gives the error its code afterwards.
        result = self.execution_context.result
        error = DoorwardError(ErrorCode.UNAVAILABLE, "the request could not be completed")
        if result is None:
            # No answer object to empty (not a path strawberry takes today): refuse outright
            # rather than let whatever comes next leave without its audit events.
            raise error
        result.data = None
        result.errors = [GraphQLError(error.message, original_error=error)]
