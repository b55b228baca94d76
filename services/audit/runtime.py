"""Wiring shared by audit's adapters: database, the service and the checkpoint job. (The
database login's rights are set in the database itself: dbroles.py.)"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from doorward_kit.auth import TokenVerifier
from doorward_kit.db import Database
from services.audit.repository import Repository
from services.audit.service import AuditService
from services.audit.trace_store import TraceStoreClient

log = logging.getLogger(__name__)


@dataclass
class AuditRuntime:
    db: Database
    service: AuditService
    verifier: TokenVerifier
    # The embedded trace store's read API; None when spans go to an external collector.
    traces: TraceStoreClient | None = None


async def run_checkpoints(db: Database, service: AuditService) -> int:
    """One pass: sign a checkpoint for every organisation whose chain grew. Every replica runs
    it; an org another replica is signing right now is skipped (advisory lock), and one it has
    just signed no longer needs a checkpoint, so each tree size is signed once."""
    async with db.unit_of_work() as session:
        orgs = await service.orgs_needing_checkpoint(session)
    signed = 0
    for org_id in orgs:
        try:
            async with db.unit_of_work() as session:
                repo = Repository(session)
                if not await repo.try_lock_checkpoint(org_id) or not await repo.needs_checkpoint(
                    org_id
                ):
                    continue
                if await service.checkpoint_org(session, org_id) is not None:
                    signed += 1
        except Exception:
            log.exception("checkpoint failed", extra={"fields": {"org.id": org_id}})
    return signed


async def verify_all(db: Database, service: AuditService) -> list[str]:
    """One pass of the whole-chain check over every organisation; returns those found broken.
    Shares the checkpoint's advisory lock: a replica signing or checking an org now is left
    to it, and the next pass comes round again."""
    async with db.unit_of_work() as session:
        orgs = await Repository(session).orgs_with_events()
    broken: list[str] = []
    for org_id in orgs:
        try:
            async with db.unit_of_work() as session:
                if not await Repository(session).try_lock_checkpoint(org_id):
                    continue
                if not (await service.verify_and_alert(session, org_id)).ok:
                    broken.append(org_id)
        except Exception:
            log.exception("audit chain check failed", extra={"fields": {"org.id": org_id}})
    return broken


async def verification_loop(db: Database, service: AuditService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await verify_all(db, service)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("audit chain check pass failed")


async def checkpoint_loop(db: Database, service: AuditService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_checkpoints(db, service)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("checkpoint pass failed")
