"""Data lifecycle: how long each category of data is kept (per organisation), legal holds that
suspend deletion, and what the purge deletes (services/workorders/purge.py runs it).

Categories and defaults (days), chosen to be defensible for a UK/EU company:
  work orders and invoice lines   2192 (six years after completion or cancellation: HMRC/VAT
                                  and limitation periods)
  customers' contact data          730 (two years without any job: erased)
  site secrets                     730 (a site without a job for two years)
  the grant registry                90 (after a grant ended)
  audit events                    2192 (six years; settable down to 183 days = six months)
  traces                            30
Work orders and contact data are purged here (contact data crypto-shredded through secrets'
ShredRetainedCustomers, like an erasure); site secrets (RetireSiteSecrets) and the grant
registry (PruneGrants) by secrets, audit events by audit (PruneEvents) and traces by the
embedded trace store (SetOrgRetention: it keeps the value in its database and prunes the
organisation's traces by it, never past its own DOORWARD_TRACES_RETENTION_DAYS), all asked by
the purge with these values. With an external OpenTelemetry collector
(OTEL_EXPORTER_OTLP_ENDPOINT) no Doorward process holds the traces: their retention is the
operator's backend's job, and the policy says so (TraceRetentionBy.EXTERNAL_BACKEND).

A legal hold on a customer covers the customer's contact data, sites and work orders; a hold on
a site covers the site, its work orders and the customer's contact data; a hold on a work order
covers it and its customer's contact data. Nothing covered is deleted, neither by the purge nor
by an erasure, until the hold is released.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.auth import Principal
from doorward_kit.errors import bad_input, conflict, not_found
from doorward_kit.policy import Action, Resource, authorize
from services.workorders.models import LegalHold, RetentionPolicyRow
from services.workorders.repository import Repository
from services.workorders.service import WorkOrdersService

MIN_REASON = 5
MAX_REASON = 1000


@dataclass(frozen=True)
class RetentionPolicy:
    work_order_days: int = 2192
    contact_data_days: int = 730
    site_secret_days: int = 730
    grant_days: int = 90
    audit_event_days: int = 2192
    trace_days: int = 30

    @classmethod
    def of(cls, row: RetentionPolicyRow | None) -> RetentionPolicy:
        if row is None:
            return cls()
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def cutoff(self, category: str, now: datetime) -> datetime:
        days: int = getattr(self, f"{category}_days")
        return now - timedelta(days=days)


class TraceRetentionBy(enum.StrEnum):
    """Who deletes traces after traceDays."""

    # The embedded trace store (doorward up's default): the purge hands it traceDays.
    TRACE_STORE = "TRACE_STORE"
    # Spans go to the operator's own collector: Doorward deletes nothing there.
    EXTERNAL_BACKEND = "EXTERNAL_BACKEND"


# field -> (least, most) days an administrator may set.
BOUNDS: dict[str, tuple[int, int]] = {
    "work_order_days": (365, 36500),
    "contact_data_days": (30, 36500),
    "site_secret_days": (30, 36500),
    "grant_days": (1, 3650),
    "audit_event_days": (183, 36500),
    "trace_days": (1, 3650),
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def changed_retention(current: RetentionPolicy, changes: dict[str, int | None]) -> RetentionPolicy:
    """The policy after an update (None keeps a value), every value within its bounds."""
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if value is None:
            continue
        least, most = BOUNDS[name]
        if not least <= value <= most:
            raise bad_input(f"{_camel(name)} must be {least}..{most} days")
        values[name] = value
    return replace(current, **values)


class HoldTarget(enum.StrEnum):
    CUSTOMER = "CUSTOMER"
    SITE = "SITE"
    WORK_ORDER = "WORK_ORDER"


def _reason(value: str) -> str:
    text = (value or "").strip()
    if len(text) < MIN_REASON:
        raise bad_input(f"reason must have at least {MIN_REASON} characters")
    if len(text) > MAX_REASON:
        raise bad_input(f"reason must have at most {MAX_REASON} characters")
    return text


class Retention:
    def __init__(self, orders: WorkOrdersService) -> None:
        self.orders = orders

    # ---- policy -------------------------------------------------------------------------------

    async def policy(self, session: AsyncSession, principal: Principal) -> RetentionPolicy:
        authorize(principal, Action.RETENTION_MANAGE, Resource(principal.org_id))
        return RetentionPolicy.of(await Repository(session).retention_policy(principal.org_id))

    async def update_policy(
        self, session: AsyncSession, principal: Principal, changes: dict[str, int | None]
    ) -> RetentionPolicy:
        authorize(principal, Action.RETENTION_MANAGE, Resource(principal.org_id))
        repo = Repository(session)
        current = RetentionPolicy.of(await repo.retention_policy(principal.org_id))
        policy = changed_retention(current, changes)
        values = {f.name: getattr(policy, f.name) for f in fields(policy)}
        await repo.save_retention_policy(principal.org_id, values, principal.user_id)
        changed = [_camel(n) for n in values if values[n] != getattr(current, n)]
        await self.orders.audit(
            session,
            principal,
            "org.retention_policy.update",
            target_type="Organisation",
            target_id=principal.org_id,
            details={"fields": ",".join(changed)},
        )
        return policy

    # ---- legal holds --------------------------------------------------------------------------

    async def holds(self, session: AsyncSession, principal: Principal) -> list[LegalHold]:
        authorize(principal, Action.RETENTION_MANAGE, Resource(principal.org_id))
        return await Repository(session).legal_holds(principal.org_id)

    async def place(
        self,
        session: AsyncSession,
        principal: Principal,
        target_type: HoldTarget,
        target_id: str,
        reason: str,
    ) -> LegalHold:
        authorize(principal, Action.RETENTION_MANAGE, Resource(principal.org_id))
        details: dict[str, str] = {"kind": target_type.value}
        work_order_id = ""
        # First the rows the hold covers, then the lookups: a purge batch running now either
        # finished (the lookup sees what is left) or will skip them (Repository.lock_hold_cover).
        await Repository(session).lock_hold_cover(principal.org_id, target_type.value, target_id)
        # The target must exist in the caller's organisation (and be theirs to see).
        if target_type is HoldTarget.CUSTOMER:
            customer = await self.orders.customer_for(session, principal, target_id)
            details["customer_id"] = customer.id
        elif target_type is HoldTarget.SITE:
            site = await self.orders.site_for(session, principal, target_id)
            details.update(site_id=site.id, customer_id=site.customer_id)
        else:
            order = await self.orders.order_for(session, principal, target_id)
            work_order_id = order.id
        reason = _reason(reason)
        hold = LegalHold(
            id=str(uuid.uuid4()),
            org_id=principal.org_id,
            target_type=target_type.value,
            target_id=target_id,
            reason=reason,
            placed_by=principal.user_id,
            placed_at=self.orders.clock(),
        )
        repo = Repository(session)
        repo.add(hold)
        await repo.flush()
        await self.orders.audit(
            session,
            principal,
            "legal_hold.place",
            target_type="LegalHold",
            target_id=hold.id,
            work_order_id=work_order_id,
            details=details,
        )
        return hold

    async def release(
        self, session: AsyncSession, principal: Principal, hold_id: str, reason: str
    ) -> LegalHold:
        authorize(principal, Action.RETENTION_MANAGE, Resource(principal.org_id))
        repo = Repository(session)
        hold = await repo.legal_hold(principal.org_id, hold_id, for_update=True)
        if hold is None:
            raise not_found("legal hold")
        reason = _reason(reason)
        if hold.released_at is not None:
            raise conflict("this legal hold has already been released")
        hold.released_at = self.orders.clock()
        hold.released_by = principal.user_id
        hold.release_reason = reason
        await repo.flush()
        await self.orders.audit(
            session,
            principal,
            "legal_hold.release",
            target_type="LegalHold",
            target_id=hold.id,
            details={"kind": hold.target_type},
        )
        return hold
