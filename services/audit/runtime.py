"""Wiring shared by audit's adapters: database (switched to the append-only role), the service
and the checkpoint job."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event

from doorward_kit.auth import TokenVerifier
from doorward_kit.db import Database
from services.audit.service import AuditService

log = logging.getLogger(__name__)

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class AuditRuntime:
    db: Database
    service: AuditService
    verifier: TokenVerifier


def use_role(db: Database, role: str) -> None:
    """Every connection of the service switches to `role` (INSERT/SELECT only on the trail).

    If the role does not exist or the login user may not use it, the service still runs (the
    triggers keep the trail append-only) but says so loudly: see the migration's ROLE_SQL."""
    if not role:
        return
    if not _ROLE_NAME.match(role):
        raise ValueError("DOORWARD_AUDIT_DB_ROLE must be a plain lower-case role name")

    async def switch(connection: Any) -> None:
        usable = await connection.fetchval(
            "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1",
            role,
        )
        if usable:
            await connection.execute(f'SET ROLE "{role}"')
        else:
            log.warning(
                "audit database role not usable: the service keeps its login role",
                extra={"fields": {"role": role}},
            )

    @event.listens_for(db.engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(switch)


async def run_checkpoints(db: Database, service: AuditService) -> int:
    """One pass: sign a checkpoint for every organisation whose chain grew."""
    async with db.unit_of_work() as session:
        orgs = await service.orgs_needing_checkpoint(session)
    signed = 0
    for org_id in orgs:
        try:
            async with db.unit_of_work() as session:
                if await service.checkpoint_org(session, org_id) is not None:
                    signed += 1
        except Exception:
            log.exception("checkpoint failed", extra={"fields": {"org.id": org_id}})
    return signed


async def checkpoint_loop(db: Database, service: AuditService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_checkpoints(db, service)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("checkpoint pass failed")
