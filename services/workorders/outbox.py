"""Delivers owed RevokeGrants calls to the secrets service. Rows are written in the same
transaction as the completion / cancellation / reassignment / rescheduling that owes them, so a
crash between the change and the call loses nothing; the sender retries with backoff until
secrets confirms (RevokeGrants is idempotent: revoking twice revokes nothing more)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from doorward_kit.audit_client import backoff_delay
from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError
from services.workorders.ports import SecretsPort
from services.workorders.repository import Repository

log = logging.getLogger(__name__)


class RevocationSender:
    def __init__(
        self,
        db: Database,
        secrets: SecretsPort,
        *,
        poll_seconds: float = 1.0,
        batch: int = 50,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self._db = db
        self._secrets = secrets
        self._poll = poll_seconds
        self._batch = batch
        self._base = backoff_base
        self._cap = backoff_cap
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def deliver_once(self) -> int:
        """One pass over due rows; returns how many secrets confirmed."""
        delivered = 0
        async with self._db.unit_of_work() as session:
            repo = Repository(session)
            rows = await repo.due_revocations(self._batch)
            for row in rows:
                try:
                    await self._secrets.revoke_grants(row.org_id, row.work_order_id, row.reason)
                except DoorwardError as error:
                    delay = backoff_delay(row.attempts + 1, base=self._base, cap=self._cap)
                    log.warning(
                        "grant revocation not delivered yet",
                        extra={
                            "fields": {
                                "work_order_id": row.work_order_id,
                                "code": error.code.value,
                                "attempts": row.attempts + 1,
                            }
                        },
                    )
                    await repo.retry_revocation_later(row.id, delay)
                    continue
                await repo.forget_revocation(row.id)
                delivered += 1
        return delivered

    async def run(self) -> None:
        while True:
            # Cleared before the pass: a kick that arrives during it triggers another pass.
            self._wake.clear()
            try:
                delivered = await self.deliver_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("grant revocation outbox pass failed")
                delivered = 0
            if delivered >= self._batch:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
