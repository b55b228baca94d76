"""Identity's audit events, written to the audit outbox in the caller's transaction (the kit's
OutboxSender delivers them). Details hold ids and enums only: never an email or a password."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.audit_client import AuditRecord, Outcome, record_event
from services.identity.models import AuditOutbox


async def record_audit(
    session: AsyncSession,
    *,
    org_id: str,
    actor_id: str,
    action: str,
    outcome: str,
    target_type: str = "",
    target_id: str = "",
    source_ip: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    await record_event(
        session,
        AuditOutbox,
        AuditRecord(
            org_id=org_id,
            actor_id=actor_id,
            action=action,
            outcome=Outcome(outcome),
            target_type=target_type,
            target_id=target_id,
            work_order_id="",
            secret_ref_id="",
            source_ip=source_ip,
            details=details or {},
        ),
    )
