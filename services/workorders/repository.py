"""All SQL of the workorders service. Every query is filtered by organisation."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from doorward_kit.db import RawReader, raw_reader
from services.workorders.models import (
    BreakGlassRequest,
    Customer,
    InvoiceLine,
    LegalHold,
    OrgSettings,
    PurgeRun,
    RetentionPolicyRow,
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


@dataclass(frozen=True)
class OrderRow:
    """A work order as a page of the list shows it: plain columns, no ORM object (a page is
    read on every board refresh, and building 21 ORM objects cost more than reading them)."""

    id: str
    org_id: str
    number: int
    site_id: str
    region_id: str
    title: str
    description: str
    status: str
    priority: str
    scheduled_start: datetime | None
    scheduled_end: datetime | None
    assignee_id: str | None
    created_at: datetime
    completed_at: datetime | None


_ORDER_SQL_COLUMNS = ", ".join(f.name for f in fields(OrderRow))


@dataclass(frozen=True)
class SiteRow:
    """A site as reads use it: plain columns, no ORM object. The board reads its sites on every
    refresh; the few writes to a read site (the v1 re-seal) are targeted UPDATEs."""

    id: str
    org_id: str
    customer_id: str
    region_id: str
    address: bytes | None
    created_at: datetime


@dataclass(frozen=True)
class CustomerRow:
    """A customer as reads use it (see SiteRow). Changes to a customer (restriction, erasure)
    go through the mapped class, under its row lock."""

    id: str
    org_id: str
    region_id: str
    wrapped_key: bytes | None
    contact: bytes | None
    erased_at: datetime | None
    restricted: bool
    created_at: datetime


# The board's reads, as the text asyncpg prepares once per connection (doorward_kit.db
# RawReader). Ids come as one text[] parameter: the same text for any number of ids, and an
# array type asyncpg has built in (varchar[] cost a catalogue lookup on every new connection).
# The columns are the row classes' fields, in their order (tests/unit/workorders checks).
_SITES_BY_ID = (
    "SELECT id, org_id, customer_id, region_id, address, created_at FROM sites"
    " WHERE org_id = $1 AND id = ANY($2::text[])"
)
_CUSTOMERS_BY_ID = (
    "SELECT id, org_id, region_id, wrapped_key, contact, erased_at, restricted, created_at"
    " FROM customers WHERE org_id = $1 AND id = ANY($2::text[])"
)
_SECRETS_OF_ORDERS = (
    "SELECT work_order_id, secret_ref_id FROM work_order_secrets"
    " WHERE org_id = $1 AND work_order_id = ANY($2::text[])"
    " ORDER BY attached_at, secret_ref_id"
)

_SITES_WITH_JOBS_OF = (
    "SELECT DISTINCT site_id FROM work_orders"
    " WHERE org_id = $1 AND assignee_id = $2 AND site_id = ANY($3::text[])"
)
_CUSTOMERS_WITH_JOBS_OF = (
    "SELECT DISTINCT s.customer_id FROM sites s JOIN work_orders w ON w.site_id = s.id"
    " WHERE s.org_id = $1 AND w.org_id = $1 AND w.assignee_id = $2"
    " AND s.customer_id = ANY($3::text[])"
)
_CUSTOMERS_WITH_JOBS_IN = _CUSTOMERS_WITH_JOBS_OF + " AND w.status = ANY($4::text[])"


@functools.cache
def _page_sql(
    regions: bool,
    assignee: bool,
    status: bool,
    region: bool,
    start_from: bool,
    start_to: bool,
    after: bool,
) -> str:
    """The text of a page of work orders with the given filters, numbered in this order (the
    org first, the limit last). One text per combination of filters (at most 128, made once
    each), prepared once per connection; the values are parameters."""
    where = ["org_id = $1"]

    def param() -> str:
        return f"${len(where) + 1}"

    for present, condition in (
        (regions, "region_id = ANY({}::text[])"),
        (assignee, "assignee_id = {}"),
        (status, "status = {}"),
        (region, "region_id = {}"),
        # from/to: jobs whose scheduled window overlaps [from, to).
        (start_from, "scheduled_end > {}"),
        (start_to, "scheduled_start < {}"),
    ):
        if present:
            where.append(condition.format(param()))
    if after:
        # Keyset pagination after (created_at, id); the cursor's two values are one parameter
        # each, so this condition takes two numbers.
        at, ident = f"${len(where) + 1}", f"${len(where) + 2}"
        where.append(f"(created_at > {at} OR (created_at = {at} AND id > {ident}))")
        limit = f"${len(where) + 2}"
    else:
        limit = f"${len(where) + 1}"
    conditions = " AND ".join(where)
    return (
        f"SELECT {_ORDER_SQL_COLUMNS} FROM work_orders WHERE {conditions}"  # noqa: S608 (constants)
        f" ORDER BY created_at, id LIMIT {limit}"
    )


class Repository:
    """On a session (a unit of work, a request's ORM session) every method works; on a raw
    reader (a request's board reads: api/request_unit.py) only the raw statements do, and a
    method built with SQLAlchemy refuses (TypeError) rather than open a session unseen."""

    def __init__(self, session: AsyncSession | RawReader) -> None:
        self._reader = session

    @property
    def session(self) -> AsyncSession:
        if not isinstance(self._reader, AsyncSession):
            raise TypeError("this statement needs an ORM session, not a raw reader")
        return self._reader

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

    async def site_rows(self, org_id: str, ids: Collection[str]) -> list[SiteRow]:
        if not ids:
            return []
        raw = await raw_reader(self._reader)
        return [SiteRow(*row) for row in await raw.fetch(_SITES_BY_ID, org_id, list(ids))]

    async def customer_rows(self, org_id: str, ids: Collection[str]) -> list[CustomerRow]:
        if not ids:
            return []
        raw = await raw_reader(self._reader)
        return [CustomerRow(*row) for row in await raw.fetch(_CUSTOMERS_BY_ID, org_id, list(ids))]

    async def reseal_contact(
        self, org_id: str, customer_id: str, was: bytes, sealed: bytes
    ) -> None:
        """Store the v2 form of a v1 contact ciphertext just read (upgrade mode), unless the
        row changed since (an erasure nulls it: never write contact data back over that)."""
        await self.session.execute(
            update(Customer)
            .where(
                Customer.org_id == org_id,
                Customer.id == customer_id,
                Customer.contact == was,
                Customer.erased_at.is_(None),
            )
            .values(contact=sealed)
            .execution_options(synchronize_session=False)
        )

    async def reseal_address(self, org_id: str, site_id: str, was: bytes, sealed: bytes) -> None:
        """reseal_contact for one site's address."""
        await self.session.execute(
            update(Site)
            .where(Site.org_id == org_id, Site.id == site_id, Site.address == was)
            .values(address=sealed)
            .execution_options(synchronize_session=False)
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

    async def site_rows_of_customers(
        self, org_id: str, customer_ids: Collection[str]
    ) -> list[SiteRow]:
        if not customer_ids:
            return []
        c = Site.__table__.c
        result = await self.session.execute(
            select(*(c[f.name] for f in fields(SiteRow)))
            .where(c.org_id == org_id, c.customer_id.in_(list(customer_ids)))
            .order_by(c.created_at, c.id)
        )
        return [SiteRow(*row) for row in result]

    async def sites_with_jobs_of(
        self, org_id: str, user_id: str, site_ids: Collection[str]
    ) -> set[str]:
        """Which of these sites the user has (had) a job at. Raw: a field user's board asks
        on every refresh (their sites' visibility)."""
        if not site_ids:
            return set()
        raw = await raw_reader(self._reader)
        return {r[0] for r in await raw.fetch(_SITES_WITH_JOBS_OF, org_id, user_id, list(site_ids))}

    async def customers_with_jobs_of(
        self,
        org_id: str,
        user_id: str,
        customer_ids: Collection[str],
        *,
        statuses: Collection[str] | None = None,
    ) -> set[str]:
        """Which of these customers the user has a job at (in one of `statuses`, if given).
        Raw: a field user's board asks on every refresh (who may read the addresses)."""
        if not customer_ids:
            return set()
        raw = await raw_reader(self._reader)
        if statuses is None:
            rows = await raw.fetch(_CUSTOMERS_WITH_JOBS_OF, org_id, user_id, list(customer_ids))
        else:
            rows = await raw.fetch(
                _CUSTOMERS_WITH_JOBS_IN, org_id, user_id, list(customer_ids), list(statuses)
            )
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
        raw = await raw_reader(self._reader)  # a board asks on every refresh
        rows = await raw.fetch(_SECRETS_OF_ORDERS, org_id, list(work_order_ids))
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
    ) -> list[OrderRow]:
        # A fixed text per combination of filters, on the asyncpg connection itself: the page
        # is read on every board refresh.
        sql = _page_sql(
            regions is not None,
            assignee_id is not None,
            status is not None,
            region_id is not None,
            start_from is not None,
            start_to is not None,
            after is not None,
        )
        args: list[Any] = [org_id]
        if regions is not None:
            args.append(sorted(regions))
        args.extend(
            v for v in (assignee_id, status, region_id, start_from, start_to) if v is not None
        )
        if after is not None:
            args.extend(after)
        args.append(limit)
        raw = await raw_reader(self._reader)
        return [OrderRow(*row) for row in await raw.fetch(sql, *args)]

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

    # ---- retention, legal holds, purge ------------------------------------------------------

    async def retention_policy(self, org_id: str) -> RetentionPolicyRow | None:
        return await self.session.get(RetentionPolicyRow, org_id)

    async def orgs_with_retention_policy(self) -> list[str]:
        """Every organisation that set a policy of its own (the purge's own, cross-org read)."""
        rows = await self.session.execute(select(RetentionPolicyRow.org_id))
        return [r[0] for r in rows]

    async def save_retention_policy(
        self, org_id: str, values: dict[str, int], updated_by: str
    ) -> None:
        row = {**values, "updated_by": updated_by, "updated_at": func.now()}
        await self.session.execute(
            insert(RetentionPolicyRow)
            .values(org_id=org_id, **row)
            .on_conflict_do_update(index_elements=[RetentionPolicyRow.org_id], set_=row)
        )

    async def legal_holds(self, org_id: str) -> list[LegalHold]:
        query = (
            select(LegalHold)
            .where(LegalHold.org_id == org_id)
            .order_by(LegalHold.placed_at.desc(), LegalHold.id)
        )
        return list((await self.session.execute(query)).scalars())

    async def legal_hold(
        self, org_id: str, hold_id: str, *, for_update: bool = False
    ) -> LegalHold | None:
        query = select(LegalHold).where(LegalHold.org_id == org_id, LegalHold.id == hold_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    @staticmethod
    def _held(target_type: str, target_id: Any) -> Any:
        """An active hold on this target exists (correlated into the purge queries)."""
        return exists().where(
            LegalHold.org_id == WorkOrder.org_id,
            LegalHold.target_type == target_type,
            LegalHold.target_id == target_id,
            LegalHold.released_at.is_(None),
        )

    def _customer_held(self, org_id: str) -> Any:
        """Customer (of the outer query) covered by a hold on it, a site or a work order of it."""
        held_site_or_job = (
            select(literal(1))
            .select_from(Site)
            .outerjoin(WorkOrder, WorkOrder.site_id == Site.id)
            .join(
                LegalHold,
                and_(
                    LegalHold.org_id == org_id,
                    LegalHold.released_at.is_(None),
                    or_(
                        and_(LegalHold.target_type == "SITE", LegalHold.target_id == Site.id),
                        and_(
                            LegalHold.target_type == "WORK_ORDER",
                            LegalHold.target_id == WorkOrder.id,
                        ),
                    ),
                ),
            )
            .where(Site.org_id == org_id, Site.customer_id == Customer.id)
            .exists()
        )
        held_customer = exists().where(
            LegalHold.org_id == org_id,
            LegalHold.target_type == "CUSTOMER",
            LegalHold.target_id == Customer.id,
            LegalHold.released_at.is_(None),
        )
        return or_(held_customer, held_site_or_job)

    async def customer_held(self, org_id: str, customer_id: str) -> bool:
        query = select(Customer.id).where(
            Customer.org_id == org_id, Customer.id == customer_id, self._customer_held(org_id)
        )
        return (await self.session.execute(query)).first() is not None

    async def lock_hold_cover(self, org_id: str, target_type: str, target_id: str) -> None:
        """Share-lock every row a new hold on this target will cover (its work orders and its
        customer), before the hold is checked and written. A purge batch that already locked
        one of them (FOR UPDATE) makes us wait until it committed, so the target lookup that
        follows sees what is left; a batch that starts later skips them (SKIP LOCKED) until the
        hold is committed and then sees it. Without this, a hold placed while a batch ran was
        acknowledged for rows that batch deleted."""
        if target_type == "CUSTOMER":
            customers = select(literal(target_id))
            orders = (
                select(WorkOrder.id)
                .join(Site, Site.id == WorkOrder.site_id)
                .where(Site.org_id == org_id, Site.customer_id == target_id)
            )
        elif target_type == "SITE":
            customers = select(Site.customer_id).where(Site.org_id == org_id, Site.id == target_id)
            orders = select(WorkOrder.id).where(
                WorkOrder.org_id == org_id, WorkOrder.site_id == target_id
            )
        else:
            customers = (
                select(Site.customer_id)
                .join(WorkOrder, WorkOrder.site_id == Site.id)
                .where(WorkOrder.org_id == org_id, WorkOrder.id == target_id)
            )
            orders = select(literal(target_id))
        await self.session.execute(
            select(WorkOrder.id)
            .where(WorkOrder.org_id == org_id, WorkOrder.id.in_(orders))
            .order_by(WorkOrder.id)
            .with_for_update(read=True)
        )
        await self.session.execute(
            select(Customer.id)
            .where(Customer.org_id == org_id, Customer.id.in_(customers))
            .with_for_update(read=True)
        )

    async def held_ids(self, org_id: str) -> list[str]:
        """Every id an active hold covers, for audit pruning: the held targets, and for a
        customer its sites and work orders, for a site its customer and work orders, for a work
        order its site and customer."""
        holds = (
            await self.session.execute(
                select(LegalHold.target_type, LegalHold.target_id).where(
                    LegalHold.org_id == org_id, LegalHold.released_at.is_(None)
                )
            )
        ).all()
        found: set[str] = set()
        for target_type, target_id in holds:
            found.add(target_id)
            if target_type == "WORK_ORDER":
                row = (
                    await self.session.execute(
                        select(Site.id, Site.customer_id)
                        .join(WorkOrder, WorkOrder.site_id == Site.id)
                        .where(WorkOrder.org_id == org_id, WorkOrder.id == target_id)
                    )
                ).first()
                found.update(row or ())
                continue
            site_filter = (
                Site.customer_id == target_id if target_type == "CUSTOMER" else Site.id == target_id
            )
            for site_id, customer_id in (
                await self.session.execute(
                    select(Site.id, Site.customer_id).where(Site.org_id == org_id, site_filter)
                )
            ).all():
                found.update((site_id, customer_id))
                orders = await self.session.execute(
                    select(WorkOrder.id).where(
                        WorkOrder.org_id == org_id, WorkOrder.site_id == site_id
                    )
                )
                found.update(orders.scalars())
        return sorted(found)

    async def held_sites_and_work_orders(self, org_id: str) -> tuple[list[str], list[str]]:
        """Sites under a hold (on the site or its customer) and work orders under a hold of
        their own: what other services' retention must keep (a site covers its jobs)."""
        active = and_(LegalHold.org_id == org_id, LegalHold.released_at.is_(None))
        sites = await self.session.execute(
            select(Site.id)
            .join(
                LegalHold,
                and_(
                    active,
                    or_(
                        and_(LegalHold.target_type == "SITE", LegalHold.target_id == Site.id),
                        and_(
                            LegalHold.target_type == "CUSTOMER",
                            LegalHold.target_id == Site.customer_id,
                        ),
                    ),
                ),
            )
            .where(Site.org_id == org_id)
            .distinct()
        )
        orders = await self.session.execute(
            select(LegalHold.target_id).where(active, LegalHold.target_type == "WORK_ORDER")
        )
        return [r[0] for r in sites], [r[0] for r in orders]

    async def stale_sites(self, org_id: str, cutoff: datetime, after: str, limit: int) -> list[str]:
        """Sites (ids after `after`, in order) older than `cutoff` with no open job and no job
        that moved since, not covered by a hold: their secrets' retention has run out."""
        recent = exists().where(
            WorkOrder.org_id == org_id,
            WorkOrder.site_id == Site.id,
            or_(
                WorkOrder.status.not_in(("COMPLETED", "CANCELLED")),
                func.coalesce(WorkOrder.completed_at, WorkOrder.updated_at) >= cutoff,
            ),
        )
        active = and_(LegalHold.org_id == org_id, LegalHold.released_at.is_(None))
        held = exists().where(
            active,
            or_(
                and_(LegalHold.target_type == "SITE", LegalHold.target_id == Site.id),
                and_(LegalHold.target_type == "CUSTOMER", LegalHold.target_id == Site.customer_id),
                and_(
                    LegalHold.target_type == "WORK_ORDER",
                    LegalHold.target_id.in_(
                        # correlated to the outer site (two levels up)
                        select(WorkOrder.id).where(WorkOrder.site_id == Site.id).correlate(Site)
                    ),
                ),
            ),
        )
        query = (
            select(Site.id)
            .where(Site.org_id == org_id, Site.created_at < cutoff, Site.id > after, ~recent, ~held)
            .order_by(Site.id)
            .limit(limit)
        )
        return [r[0] for r in await self.session.execute(query)]

    async def orgs_with_data(self) -> list[str]:
        """Every organisation that holds customers here (the purge's own, cross-org read)."""
        rows = await self.session.execute(select(Customer.org_id).distinct())
        return [r[0] for r in rows]

    async def expired_work_orders(self, org_id: str, cutoff: datetime, limit: int) -> list[str]:
        """Finished work orders whose retention ended, not under a hold; locked, skipping rows
        another purge holds (SKIP LOCKED), so two runners never take the same row."""
        finished = func.coalesce(WorkOrder.completed_at, WorkOrder.updated_at)
        query = (
            select(WorkOrder.id)
            .join(Site, Site.id == WorkOrder.site_id)
            .where(
                WorkOrder.org_id == org_id,
                WorkOrder.status.in_(("COMPLETED", "CANCELLED")),
                finished < cutoff,
                ~self._held("WORK_ORDER", WorkOrder.id),
                ~self._held("SITE", WorkOrder.site_id),
                ~self._held("CUSTOMER", Site.customer_id),
            )
            .order_by(finished, WorkOrder.id)
            .limit(limit)
            .with_for_update(of=WorkOrder, skip_locked=True)
        )
        return [r[0] for r in await self.session.execute(query)]

    async def delete_work_orders(self, org_id: str, ids: Collection[str]) -> int:
        if not ids:
            return 0
        wanted = list(ids)
        # Remember when each customer's deleted jobs last moved (contact retention counts on).
        latest = (
            select(Site.customer_id, func.max(_job_activity()).label("at"))
            .join(WorkOrder, WorkOrder.site_id == Site.id)
            .where(WorkOrder.org_id == org_id, WorkOrder.id.in_(wanted))
            .group_by(Site.customer_id)
            .subquery()
        )
        await self.session.execute(
            update(Customer)
            .where(Customer.org_id == org_id, Customer.id == latest.c.customer_id)
            .values(
                last_job_at=func.greatest(
                    func.coalesce(Customer.last_job_at, latest.c.at), latest.c.at
                )
            )
        )
        for model in (WorkOrderSecret, InvoiceLine, WorkNote):
            await self.session.execute(
                delete(model).where(model.org_id == org_id, model.work_order_id.in_(wanted))
            )
        result = await self.session.execute(
            delete(WorkOrder)
            .where(WorkOrder.org_id == org_id, WorkOrder.id.in_(wanted))
            .returning(WorkOrder.id)
        )
        return len(result.all())

    async def stale_customers(self, org_id: str, cutoff: datetime, limit: int) -> list[str]:
        """Customers (not erased, not held) created before the cutoff with no open job and no
        job touched since it; locked with SKIP LOCKED."""
        recent_job = (
            select(literal(1))
            .select_from(WorkOrder)
            .join(Site, Site.id == WorkOrder.site_id)
            .where(
                Site.org_id == org_id,
                Site.customer_id == Customer.id,
                or_(
                    WorkOrder.status.in_(("DRAFT", "SCHEDULED", "DISPATCHED", "IN_PROGRESS")),
                    _job_activity() >= cutoff,
                ),
            )
            .exists()
        )
        query = (
            select(Customer.id)
            .where(
                Customer.org_id == org_id,
                Customer.erased_at.is_(None),
                Customer.created_at < cutoff,
                or_(Customer.last_job_at.is_(None), Customer.last_job_at < cutoff),
                ~recent_job,
                ~self._customer_held(org_id),
            )
            .order_by(Customer.created_at, Customer.id)
            .limit(limit)
            .with_for_update(of=Customer, skip_locked=True)
        )
        return [r[0] for r in await self.session.execute(query)]

    async def purge_contact_data(self, org_id: str, ids: Collection[str], now: datetime) -> int:
        """Delete the ciphertexts and the wrapped data key: nothing left here can be opened."""
        if not ids:
            return 0
        wanted = list(ids)
        await self.session.execute(
            update(Site)
            .where(Site.org_id == org_id, Site.customer_id.in_(wanted))
            .values(address=None)
        )
        result = await self.session.execute(
            update(Customer)
            .where(Customer.org_id == org_id, Customer.id.in_(wanted))
            .values(wrapped_key=None, contact=None, erased_at=now)
            .returning(Customer.id)
        )
        return len(result.all())

    # ---- purge runs ---------------------------------------------------------------------------

    async def last_purge_run(self) -> PurgeRun | None:
        query = select(PurgeRun).order_by(PurgeRun.started_at.desc()).limit(1)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def purge_run(self, run_id: str) -> PurgeRun | None:
        return await self.session.get(PurgeRun, run_id)


def _job_activity() -> Any:
    """The last time a work order moved (created, changed, completed or scheduled to end)."""
    return func.greatest(
        WorkOrder.created_at,
        WorkOrder.updated_at,
        func.coalesce(WorkOrder.completed_at, WorkOrder.created_at),
        func.coalesce(WorkOrder.scheduled_end, WorkOrder.created_at),
    )


# ---- the purge's lock: a session-level advisory lock on a connection of its own ---------------


async def try_advisory_lock(conn: AsyncConnection, key: int) -> bool:
    """Held as long as `conn` lives: released by PostgreSQL itself when the process dies."""
    row = await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
    return bool(row.scalar_one())


async def advisory_unlock(conn: AsyncConnection, key: int) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
