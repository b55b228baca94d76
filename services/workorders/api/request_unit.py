"""One database session per GraphQL request (issue 11).

A board request used to open four sessions: the page, then sites and secret ids in parallel,
then addresses. Each cost a pool checkout with its pre-ping, a BEGIN and a COMMIT besides its
query, and the three round trips of each were most of workorders' share of a board. Now every
read of a request (the query resolvers and all DataLoader batches) shares one session, opened
at the first read, in one transaction.

The session is used by one batch at a time (the lock): the DataLoaders of one level run as
parallel tasks, and an AsyncSession runs one statement at a time.

The transaction commits when execution has finished and before the answer leaves
(`RequestTransaction`). What a read writes, the audit events of contact reads above all, is
therefore committed before any of the data it covers is sent; if the commit fails, the whole
answer is replaced by an error (no contact data leaves unaudited). A batch that fails part-way
may leave audit events of reads whose data is then not returned: on the trail once too often
is the safe side.

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

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.extensions import SchemaExtension

from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError, ErrorCode

log = logging.getLogger(__name__)


class RequestUnit:
    """The request's one session, opened lazily; `finish` commits (or rolls back) and closes."""

    def __init__(self, db: Database) -> None:
        self._db = db
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
                self._session = self._db.sessions()
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
                await session.commit()
            else:
                await session.rollback()
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
        if result is not None:
            result.data = None
            result.errors = [GraphQLError(error.message, original_error=error)]
