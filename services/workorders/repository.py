"""All SQL of the workorders service. Every query is filtered by organisation."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.workorders.models import (
    BreakGlassRequest,
    Customer,
    InvoiceLine,
    OrgSettings,
    SecretsOutbox,
    Site,
    SiteSecretRef,
    WorkNote,
    WorkOrder,
    WorkOrderSecret,
)

DEFAULT_LEAD_MINUTES = 30
DEFAULT_GRACE_MINUTES = 30
DEFAULT_MAX_WINDOW_MINUTES = 12 * 60


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---- organisation settings ------------------------------------------------------------

    async def org_settings(self, org_id: str) -> OrgSettings:
        row = await self.session.get(OrgSettings, org_id)
        if row is None:
            return OrgSettings(
                org_id=org_id,
                lead_minutes=DEFAULT_LEAD_MINUTES,
                grace_minutes=DEFAULT_GRACE_MINUTES,
                max_window_minutes=DEFAULT_MAX_WINDOW_MINUTES,
                timezone="UTC",
            )
        return row

    async def save_org_settings(
        self, org_id: str, lead: int, grace: int, max_window: int, timezone: str
    ) -> OrgSettings:
        values = {
            "lead_minutes": lead,
            "grace_minutes": grace,
            "max_window_minutes": max_window,
            "timezone": timezone,
            "updated_at": func.now(),
        }
        await self.session.execute(
            insert(OrgSettings)
            .values(org_id=org_id, **values)
            .on_conflict_do_update(index_elements=[OrgSettings.org_id], set_=values)
        )
        row = await self.session.get(OrgSettings, org_id, populate_existing=True)
        assert row is not None
        return row

    async def save_break_glass_policy(self, org_id: str, second_approver: bool) -> bool:
        values = {"break_glass_second_approver": second_approver, "updated_at": func.now()}
        await self.session.execute(
            insert(OrgSettings)
            .values(
                org_id=org_id,
                lead_minutes=DEFAULT_LEAD_MINUTES,
                grace_minutes=DEFAULT_GRACE_MINUTES,
                max_window_minutes=DEFAULT_MAX_WINDOW_MINUTES,
                **values,
            )
            .on_conflict_do_update(index_elements=[OrgSettings.org_id], set_=values)
        )
        return second_approver

    # ---- break-glass requests ---------------------------------------------------------------

    def add_break_glass_request(self, row: BreakGlassRequest) -> None:
        self.session.add(row)

    async def break_glass_request(
        self, org_id: str, request_id: str, *, for_update: bool = False
    ) -> BreakGlassRequest | None:
        query = select(BreakGlassRequest).where(
            BreakGlassRequest.org_id == org_id, BreakGlassRequest.id == request_id
        )
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def break_glass_requests(
        self, org_id: str, statuses: Collection[str] | None, limit: int = 200
    ) -> list[BreakGlassRequest]:
        query = select(BreakGlassRequest).where(BreakGlassRequest.org_id == org_id)
        if statuses is not None:
            query = query.where(BreakGlassRequest.status.in_(list(statuses)))
        query = query.order_by(BreakGlassRequest.created_at.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def next_number(self, org_id: str) -> int:
        """Work order numbers count up per organisation (the row lock serialises creators)."""
        result = await self.session.execute(
            insert(OrgSettings)
            .values(
                org_id=org_id,
                lead_minutes=DEFAULT_LEAD_MINUTES,
                grace_minutes=DEFAULT_GRACE_MINUTES,
                max_window_minutes=DEFAULT_MAX_WINDOW_MINUTES,
                timezone="UTC",
                next_number=2,
            )
            .on_conflict_do_update(
                index_elements=[OrgSettings.org_id],
                set_={"next_number": OrgSettings.next_number + 1},
            )
            .returning(OrgSettings.next_number)
        )
        return int(result.scalar_one()) - 1

    # ---- customers and sites --------------------------------------------------------------

    def add(self, row: object) -> None:
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()

    async def customer(self, org_id: str, customer_id: str) -> Customer | None:
        return (
            await self.session.execute(
                select(Customer).where(Customer.org_id == org_id, Customer.id == customer_id)
            )
        ).scalar_one_or_none()

    async def lock_customer(self, org_id: str, customer_id: str) -> None:
        """Serialise changes of one customer's flags (two admins restricting at once)."""
        await self.session.execute(
            select(Customer.id)
            .where(Customer.org_id == org_id, Customer.id == customer_id)
            .with_for_update()
        )

    async def customers(self, org_id: str, ids: Collection[str]) -> list[Customer]:
        if not ids:
            return []
        return list(
            (
                await self.session.execute(
                    select(Customer).where(Customer.org_id == org_id, Customer.id.in_(list(ids)))
                )
            ).scalars()
        )

    async def list_customers(
        self,
        org_id: str,
        regions: frozenset[str] | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> Sequence[Customer]:
        query = select(Customer).where(Customer.org_id == org_id)
        if regions is not None:
            query = query.where(Customer.region_id.in_(sorted(regions)))
        if after is not None:
            query = query.where(
                or_(
                    Customer.created_at > after[0],
                    and_(Customer.created_at == after[0], Customer.id > after[1]),
                )
            )
        query = query.order_by(Customer.created_at, Customer.id).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def sites(self, org_id: str, ids: Collection[str]) -> list[Site]:
        if not ids:
            return []
        return list(
            (
                await self.session.execute(
                    select(Site).where(Site.org_id == org_id, Site.id.in_(list(ids)))
                )
            ).scalars()
        )

    async def sites_of_customers(self, org_id: str, customer_ids: Collection[str]) -> list[Site]:
        if not customer_ids:
            return []
        return list(
            (
                await self.session.execute(
                    select(Site)
                    .where(Site.org_id == org_id, Site.customer_id.in_(list(customer_ids)))
                    .order_by(Site.created_at, Site.id)
                )
            ).scalars()
        )

    async def sites_with_jobs_of(
        self, org_id: str, user_id: str, site_ids: Collection[str]
    ) -> set[str]:
        """Which of these sites the user has (had) a job at."""
        if not site_ids:
            return set()
        rows = await self.session.execute(
            select(WorkOrder.site_id)
            .where(
                WorkOrder.org_id == org_id,
                WorkOrder.assignee_id == user_id,
                WorkOrder.site_id.in_(list(site_ids)),
            )
            .distinct()
        )
        return {r[0] for r in rows}

    async def customers_with_jobs_of(
        self,
        org_id: str,
        user_id: str,
        customer_ids: Collection[str],
        *,
        statuses: Collection[str] | None = None,
    ) -> set[str]:
        """Which of these customers the user has a job at (in one of `statuses`, if given)."""
        if not customer_ids:
            return set()
        query = (
            select(Site.customer_id)
            .join(WorkOrder, WorkOrder.site_id == Site.id)
            .where(
                Site.org_id == org_id,
                WorkOrder.org_id == org_id,
                WorkOrder.assignee_id == user_id,
                Site.customer_id.in_(list(customer_ids)),
            )
            .distinct()
        )
        if statuses is not None:
            query = query.where(WorkOrder.status.in_(list(statuses)))
        rows = await self.session.execute(query)
        return {r[0] for r in rows}

    # ---- secret references ----------------------------------------------------------------

    async def add_site_secret(self, org_id: str, site_id: str, secret_ref_id: str) -> None:
        await self.session.execute(
            insert(SiteSecretRef)
            .values(org_id=org_id, site_id=site_id, secret_ref_id=secret_ref_id)
            .on_conflict_do_nothing()
        )

    async def site_secret(self, org_id: str, secret_ref_id: str) -> SiteSecretRef | None:
        return (
            await self.session.execute(
                select(SiteSecretRef).where(
                    SiteSecretRef.org_id == org_id, SiteSecretRef.secret_ref_id == secret_ref_id
                )
            )
        ).scalar_one_or_none()

    async def secrets_of_sites(
        self, org_id: str, site_ids: Collection[str]
    ) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {s: [] for s in site_ids}
        if not site_ids:
            return result
        rows = await self.session.execute(
            select(SiteSecretRef.site_id, SiteSecretRef.secret_ref_id)
            .where(SiteSecretRef.org_id == org_id, SiteSecretRef.site_id.in_(list(site_ids)))
            .order_by(SiteSecretRef.created_at, SiteSecretRef.secret_ref_id)
        )
        for site_id, ref_id in rows:
            result[site_id].append(ref_id)
        return result

    async def attach(self, org_id: str, work_order_id: str, secret_ref_id: str, user: str) -> None:
        await self.session.execute(
            insert(WorkOrderSecret)
            .values(
                org_id=org_id,
                work_order_id=work_order_id,
                secret_ref_id=secret_ref_id,
                attached_by=user,
            )
            .on_conflict_do_nothing()
        )

    async def secrets_of_orders(
        self, org_id: str, work_order_ids: Collection[str]
    ) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {w: [] for w in work_order_ids}
        if not work_order_ids:
            return result
        rows = await self.session.execute(
            select(WorkOrderSecret.work_order_id, WorkOrderSecret.secret_ref_id)
            .where(
                WorkOrderSecret.org_id == org_id,
                WorkOrderSecret.work_order_id.in_(list(work_order_ids)),
            )
            .order_by(WorkOrderSecret.attached_at, WorkOrderSecret.secret_ref_id)
        )
        for wo_id, ref_id in rows:
            result[wo_id].append(ref_id)
        return result

    # ---- work orders ----------------------------------------------------------------------

    async def work_order(
        self, org_id: str, work_order_id: str, *, for_update: bool = False
    ) -> WorkOrder | None:
        query = select(WorkOrder).where(WorkOrder.org_id == org_id, WorkOrder.id == work_order_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def work_orders(self, org_id: str, ids: Collection[str]) -> list[WorkOrder]:
        if not ids:
            return []
        return list(
            (
                await self.session.execute(
                    select(WorkOrder).where(WorkOrder.org_id == org_id, WorkOrder.id.in_(list(ids)))
                )
            ).scalars()
        )

    async def list_work_orders(
        self,
        org_id: str,
        *,
        regions: frozenset[str] | None,
        assignee_id: str | None,
        status: str | None,
        region_id: str | None,
        start_from: datetime | None,
        start_to: datetime | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[WorkOrder]:
        query = select(WorkOrder).where(WorkOrder.org_id == org_id)
        if regions is not None:
            query = query.where(WorkOrder.region_id.in_(sorted(regions)))
        if assignee_id is not None:
            query = query.where(WorkOrder.assignee_id == assignee_id)
        if status is not None:
            query = query.where(WorkOrder.status == status)
        if region_id is not None:
            query = query.where(WorkOrder.region_id == region_id)
        # from/to: jobs whose scheduled window overlaps [from, to).
        if start_from is not None:
            query = query.where(WorkOrder.scheduled_end > start_from)
        if start_to is not None:
            query = query.where(WorkOrder.scheduled_start < start_to)
        if after is not None:
            query = query.where(
                or_(
                    WorkOrder.created_at > after[0],
                    and_(WorkOrder.created_at == after[0], WorkOrder.id > after[1]),
                )
            )
        query = query.order_by(WorkOrder.created_at, WorkOrder.id).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def jobs_of(
        self,
        org_id: str,
        assignee_id: str,
        start: datetime | None,
        end: datetime | None,
        *,
        regions: frozenset[str] | None = None,
        exclude_cancelled: bool = False,
        max_window: timedelta = timedelta(hours=72),
    ) -> list[WorkOrder]:
        """An assignee's jobs whose window overlaps [start, end), by start time. The lower bound
        on scheduled_start keeps the (org, assignee, start) index range tight."""
        query = select(WorkOrder).where(
            WorkOrder.org_id == org_id, WorkOrder.assignee_id == assignee_id
        )
        if start is not None:
            query = query.where(
                WorkOrder.scheduled_start >= start - max_window, WorkOrder.scheduled_end > start
            )
        if end is not None:
            query = query.where(WorkOrder.scheduled_start < end)
        if regions is not None:
            query = query.where(WorkOrder.region_id.in_(sorted(regions)))
        if exclude_cancelled:
            query = query.where(WorkOrder.status != "CANCELLED")
        query = query.order_by(WorkOrder.scheduled_start, WorkOrder.id).limit(1000)
        return list((await self.session.execute(query)).scalars())

    async def orders_at_sites(self, org_id: str, site_ids: Collection[str]) -> list[WorkOrder]:
        if not site_ids:
            return []
        return list(
            (
                await self.session.execute(
                    select(WorkOrder)
                    .where(WorkOrder.org_id == org_id, WorkOrder.site_id.in_(list(site_ids)))
                    .order_by(WorkOrder.created_at, WorkOrder.id)
                )
            ).scalars()
        )

    async def latest_order_at_site(self, org_id: str, site_id: str) -> WorkOrder | None:
        return (
            await self.session.execute(
                select(WorkOrder)
                .where(WorkOrder.org_id == org_id, WorkOrder.site_id == site_id)
                .order_by(WorkOrder.created_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    # ---- invoice lines and notes ----------------------------------------------------------

    async def invoice_lines(
        self, org_id: str, work_order_ids: Collection[str]
    ) -> dict[str, list[InvoiceLine]]:
        result: dict[str, list[InvoiceLine]] = {w: [] for w in work_order_ids}
        if not work_order_ids:
            return result
        rows = (
            await self.session.execute(
                select(InvoiceLine)
                .where(
                    InvoiceLine.org_id == org_id,
                    InvoiceLine.work_order_id.in_(list(work_order_ids)),
                )
                .order_by(InvoiceLine.created_at, InvoiceLine.id)
            )
        ).scalars()
        for row in rows:
            result[row.work_order_id].append(row)
        return result

    async def invoice_line(self, org_id: str, line_id: str) -> InvoiceLine | None:
        return (
            await self.session.execute(
                select(InvoiceLine).where(InvoiceLine.org_id == org_id, InvoiceLine.id == line_id)
            )
        ).scalar_one_or_none()

    async def delete_invoice_line(self, org_id: str, line_id: str) -> None:
        await self.session.execute(
            delete(InvoiceLine).where(InvoiceLine.org_id == org_id, InvoiceLine.id == line_id)
        )

    async def notes(
        self, org_id: str, work_order_ids: Collection[str]
    ) -> dict[str, list[WorkNote]]:
        result: dict[str, list[WorkNote]] = {w: [] for w in work_order_ids}
        if not work_order_ids:
            return result
        rows = (
            await self.session.execute(
                select(WorkNote)
                .where(WorkNote.org_id == org_id, WorkNote.work_order_id.in_(list(work_order_ids)))
                .order_by(WorkNote.created_at, WorkNote.id)
            )
        ).scalars()
        for row in rows:
            result[row.work_order_id].append(row)
        return result

    # ---- erasure --------------------------------------------------------------------------

    async def erase_customer(self, org_id: str, customer_id: str) -> None:
        await self.session.execute(
            update(Customer)
            .where(Customer.org_id == org_id, Customer.id == customer_id)
            .values(wrapped_key=None, contact=None, erased_at=func.now())
        )
        await self.session.execute(
            update(Site)
            .where(Site.org_id == org_id, Site.customer_id == customer_id)
            .values(address=None)
        )

    # ---- the RevokeGrants outbox ----------------------------------------------------------

    def owe_revocation(self, org_id: str, work_order_id: str, reason: str) -> None:
        self.session.add(
            SecretsOutbox(
                id=str(uuid.uuid4()),
                org_id=org_id,
                work_order_id=work_order_id,
                reason=reason,
                attempts=0,
                next_attempt_at=func.now(),
            )
        )

    async def due_revocations(self, limit: int) -> list[SecretsOutbox]:
        # Sender's own query across organisations: it delivers, it never shows data to a user.
        return list(
            (
                await self.session.execute(
                    select(SecretsOutbox)
                    .where(SecretsOutbox.next_attempt_at <= func.now())
                    .order_by(SecretsOutbox.next_attempt_at, SecretsOutbox.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )

    async def retry_revocation_later(self, outbox_id: str, delay_seconds: float) -> None:
        await self.session.execute(
            update(SecretsOutbox)
            .where(SecretsOutbox.id == outbox_id)
            .values(
                attempts=SecretsOutbox.attempts + 1,
                next_attempt_at=func.now() + timedelta(seconds=delay_seconds),
            )
        )

    async def forget_revocation(self, outbox_id: str) -> None:
        await self.session.execute(delete(SecretsOutbox).where(SecretsOutbox.id == outbox_id))
