"""Delivers grant revocations to the secrets service: rows written in the deactivation's own
transaction, sent by a background loop with retries and backoff until secrets confirms."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc

from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError
from doorward_kit.grpc import ServiceChannel
from services.identity.models import SecretsOutbox
from services.identity.repository import Repository

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0


def backoff(attempts: int) -> float:
    return float(min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** max(0, attempts - 1)))


class GrantRevoker:
    def __init__(self, db: Database, channel: ServiceChannel, *, poll_seconds: float = 1.0) -> None:
        self._db = db
        self._channel = channel
        self._stub = secrets_pb2_grpc.SecretsStub(channel.channel)
        self._poll = poll_seconds
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def _send(self, row: SecretsOutbox) -> bool:
        try:
            await self._channel.call(
                self._stub.RevokeGrants,
                secrets_pb2.RevokeGrantsRequest(
                    org_id=row.org_id, user_id=row.user_id, reason=row.reason
                ),
                deadline=3.0,
                what="secrets",
            )
        except DoorwardError as error:
            log.warning(
                "grant revocation not delivered yet",
                extra={"fields": {"outbox.id": row.id, "code": error.code.value}},
            )
            return False
        return True

    async def _deliver_rows(self, rows: Iterable[SecretsOutbox]) -> int:
        delivered = 0
        for row in rows:
            row.attempts += 1
            if await self._send(row):
                row.delivered_at = datetime.now(UTC)
                delivered += 1
            else:
                row.next_attempt_at = time.time() + backoff(row.attempts)
        return delivered

    async def deliver_due(self) -> int:
        """One pass over the rows that are due; returns how many were delivered."""
        async with self._db.unit_of_work() as session:
            rows = await Repository(session).due_outbox(time.time())
            return await self._deliver_rows(rows)

    async def deliver_now(self, outbox_id: str, wait_seconds: float) -> bool:
        """Try one row at once (deactivateUser waits for it briefly); the loop retries it."""
        try:
            async with asyncio.timeout(wait_seconds), self._db.unit_of_work() as session:
                rows = await Repository(session).outbox_rows([outbox_id])
                return await self._deliver_rows(rows) == len(rows) and bool(rows)
        except TimeoutError:
            self.kick()
            return False

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("grant revocation outbox pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
