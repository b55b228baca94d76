"""One database connection per GraphQL request, and no ORM session on a board (issue 11).

A board request used to open four sessions: the page, then sites and secret ids in parallel,
then addresses. Each cost a pool checkout with its pre-ping, a BEGIN and a COMMIT besides its
query, and the three round trips of each were most of workorders' share of a board. Now every
read of a request (the query resolvers and all DataLoader batches) shares one pooled
connection, checked out at the first read.

The connection is used by one batch at a time (the lock): the DataLoaders of one level run as
parallel tasks, and a connection runs one statement at a time.

It runs without a transaction: asyncpg sends no BEGIN and no COMMIT, two of a board's eight
round trips to PostgreSQL. Nothing is lost by it: under READ COMMITTED every statement saw its
own snapshot anyway, so the levels of a request were never one consistent view.

Two ways onto it:
- `reader()`: the board's reads (the page, sites, addresses, secret ids) are raw statements
  (doorward_kit.db.RawReader), and the audit events of the contact data they read are
  collected in the request's batch (doorward_kit.audit_client.OutboxBatch). An ORM session
  around them cost more CPU than the statements did (its connection bookkeeping, the flush of
  the events through the unit of work, the commit machinery).
- `session()`: every other read, through SQLAlchemy: an ORM session bound to the same
  connection, opened at first use (autocommit, no autoflush). The raw reader opens it too for
  the rare statement of a board read that needs one (a subcontractor's window, a re-seal).

What a read writes, the audit events of contact reads above all, is written when execution
has finished and before the answer leaves (`RequestTransaction`): the batch in one raw INSERT
(and whatever was added to the ORM session in its flush), before any of the data they cover
is sent; if that fails, the whole answer is replaced by an error (no contact data leaves
unaudited; events already written stay: on the trail once too often is the safe side), and if
execution fails, nothing is written. The outbox senders of the process are woken once the
events are in.
The one other write of a read, the v2 re-seal of a v1 ciphertext in upgrade mode, is a single
guarded UPDATE through the session that commits at once (it stores the same text in the
stronger format).

Mutations keep their own unit of work (`_mutate`): a change commits, or is refused and audited,
on its own, before anything reads its result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import Any

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from strawberry.extensions import SchemaExtension

from doorward_kit.audit_client import AuditingReader, OutboxBatch
from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError, ErrorCode
from services.workorders.models import AuditOutbox

log = logging.getLogger(__name__)


class RequestUnit:
    """The request's one connection, checked out lazily; `finish` writes what the reads added
    (or drops it) and gives the connection back."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._finished = False
        self._events = OutboxBatch(AuditOutbox)
        self._stack: AsyncExitStack | None = None
        self._reader: AuditingReader | None = None
        self._session: AsyncSession | None = None

    def _check(self) -> None:
        if self._finished:
            # A straggler after the answer was settled must not write outside it.
            raise DoorwardError(ErrorCode.UNAVAILABLE, "the request has already finished")

    async def _open(self) -> AuditingReader:
        if self._reader is None:
            stack = AsyncExitStack()
            raw = await stack.enter_async_context(self._db.raw_reads())
            self._stack = stack
            self._reader = AuditingReader(raw, self._events, self._orm)
        return self._reader

    async def _orm(self) -> AsyncSession:
        """The ORM session on the request's connection (called with the lock held)."""
        self._check()
        if self._session is None:
            reader = await self._open()
            conn = AsyncConnection(self._db.engine, reader.connection)
            # Autocommit as the raw statements beside it: set on the driver adapter, no round
            # trip; the pool puts the connection back as it was when it is returned.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._session = AsyncSession(bind=conn, expire_on_commit=False, autoflush=False)
        return self._session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AuditingReader]:
        async with self._lock:
            self._check()
            yield await self._open()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._lock:
            yield await self._orm()

    @property
    def opened(self) -> bool:
        return self._reader is not None

    async def finish(self, *, commit: bool) -> None:
        async with self._lock:
            self._finished = True
            stack, self._stack = self._stack, None
            reader, self._reader = self._reader, None
            session, self._session = self._session, None
        if stack is None or reader is None:
            return
        try:
            if commit:
                if session is not None:
                    # What was added through the session (its flush; autocommit), then the
                    # batch: both before the answer leaves.
                    await session.commit()
                await self._events.write(reader)
            else:
                self._events.drop()  # the pending events are dropped, unwritten
                if session is not None:
                    await session.rollback()
        finally:
            try:
                if session is not None:
                    await session.close()
            finally:
                await stack.aclose()


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
