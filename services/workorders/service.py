"""The rules of work orders: who may see and change what, the state machine, the windows.

No web framework here and no commit: adapters open the unit of work and pass the session.
Reads by id of something the caller may not see answer NOT_FOUND (existence is not revealed).
"""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.audit_client import AuditingReader, AuditRecord, Outcome, record_event
from doorward_kit.auth import Principal, Role
from doorward_kit.decisions import SpanName, record_denial
from doorward_kit.errors import DoorwardError, ErrorCode, bad_input, conflict, not_found
from doorward_kit.policy import (
    Action,
    Resource,
    authorize,
    can,
    can_read_user,
    decide,
    only_assigned,
    region_filter,
)
from services.workorders.crypto import (
    Binding,
    CiphertextRejected,
    ContactCrypto,
    address_binding,
    contact_binding,
    seal,
)
from services.workorders.models import (
    AuditOutbox,
    Customer,
    CustomerRestriction,
    InvoiceLine,
    OrgSettings,
    Site,
    WorkNote,
    WorkOrder,
)
from services.workorders.ports import (
    GrantView,
    IdentityPort,
    SecretRefView,
    SecretsPort,
    UploadSlotView,
)
from services.workorders.repository import CustomerRow, OrderRow, Repository, SiteRow

log = logging.getLogger(__name__)

# What a read may be handed: a session (a unit of work, a request's ORM session) or a
# request's raw reader (the board's reads, api/request_unit.py): its statements are raw, its
# audit events go to the request's batch, and it opens an ORM session on its connection for
# the rare statement that needs one (`_orm`).
Reads = AsyncSession | AuditingReader


async def _orm(reads: Reads) -> AsyncSession:
    return reads if isinstance(reads, AsyncSession) else await reads.session()


# The address the request came from; set by the adapter, read when writing audit events.
source_ip: contextvars.ContextVar[str] = contextvars.ContextVar("workorders_source_ip", default="")

OPEN = ("DRAFT", "SCHEDULED", "DISPATCHED", "IN_PROGRESS")
ACTIVE = ("DISPATCHED", "IN_PROGRESS")
PRIORITIES = ("LOW", "NORMAL", "HIGH", "URGENT")
SECRET_KINDS = ("DOOR_CODE", "ALARM_CODE", "KEY_SAFE", "GATE_CODE", "OTHER")
FIELD_ROLES = frozenset({"TECHNICIAN", "SUBCONTRACTOR"})
MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_NOTE = 10_000
MAX_LABEL = 200
# Bounds an administrator may set (minutes).
MAX_LEAD_MINUTES = 24 * 60
MAX_GRACE_MINUTES = 24 * 60
MAX_WINDOW_MINUTES_LIMIT = 72 * 60
MIN_BREAK_GLASS_REASON = 10


def _assignee_refused(message: str, reason: str) -> DoorwardError:
    """BAD_USER_INPUT as before, with the reason word the assignment's decision span shows."""
    error = bad_input(message)
    error.reason = reason  # type: ignore[attr-defined]
    return error


class Refusal(DoorwardError):
    """A refusal with a machine reason for the audit trail (never personal data)."""

    def __init__(self, code: ErrorCode, message: str, reason: str) -> None:
        super().__init__(code, message)
        self.reason = reason


@dataclass(frozen=True)
class Contact:
    """A customer's contact data as this caller may see it (None: not for them)."""

    customer_id: str
    name: str | None
    phone: str | None
    email: str | None
    erased: bool = False
    # The stored ciphertext did not open here (tampered or moved): the reader gets an error.
    unreadable: bool = False


@dataclass(frozen=True)
class _Plain:
    value: str
    # Set when the stored ciphertext was v1: its v2 form, to be stored instead.
    resealed: bytes | None


@dataclass(frozen=True)
class Unreadable:
    """A site address whose ciphertext did not open here (see Contact.unreadable)."""

    site_id: str


@dataclass(frozen=True)
class WindowPolicy:
    lead: timedelta
    grace: timedelta
    max_window: timedelta
    timezone: str

    @classmethod
    def of(cls, row: OrgSettings) -> WindowPolicy:
        return cls(
            lead=timedelta(minutes=row.lead_minutes),
            grace=timedelta(minutes=row.grace_minutes),
            max_window=timedelta(minutes=row.max_window_minutes),
            timezone=row.timezone,
        )


@dataclass(frozen=True)
class AccessContextView:
    order: WorkOrder
    policy: WindowPolicy
    secret_ref_ids: list[str]


@dataclass
class WorkOrderInput:
    title: str | None = None
    description: str | None = None
    priority: str | None = None
    scheduled_start: datetime | None = None
    scheduled_end: datetime | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


PlacedT = TypeVar("PlacedT", SiteRow, CustomerRow)


def _visible(
    principal: Principal, action: Action, rows: Iterable[PlacedT], mine: Collection[str]
) -> dict[str, PlacedT]:
    """By id, the rows the policy lets the caller `action`; `mine`: ids they reach through
    their own jobs (field staff)."""
    return {
        r.id: r
        for r in rows
        if can(
            principal,
            action,
            Resource(
                org_id=r.org_id,
                region_id=r.region_id,
                assignee_id=principal.user_id if r.id in mine else None,
            ),
        )
    }


def access_window(order: WorkOrder, policy: WindowPolicy) -> tuple[datetime, datetime] | None:
    if order.scheduled_start is None or order.scheduled_end is None:
        return None
    return order.scheduled_start - policy.lead, order.scheduled_end + policy.grace


def in_window(order: WorkOrder, policy: WindowPolicy, now: datetime) -> bool:
    window = access_window(order, policy)
    return order.status in ACTIVE and window is not None and window[0] <= now < window[1]


def check_schedule(
    start: datetime | None, end: datetime | None, policy: WindowPolicy, now: datetime
) -> None:
    """A sane window: both with a zone, start before end, not longer than the org allows, and
    not already over."""
    for name, value in (("scheduledStart", start), ("scheduledEnd", end)):
        if value is not None and value.tzinfo is None:
            raise bad_input(f"{name} must carry a zone offset (ISO 8601)")
    if (start is None) != (end is None):
        return  # a DRAFT may carry one time; the pair is checked when both are set
    if start is None or end is None:
        return
    if start >= end:
        raise bad_input("scheduledStart must be before scheduledEnd")
    if end - start > policy.max_window:
        hours = policy.max_window.total_seconds() / 3600
        raise bad_input(f"the window may be at most {hours:g} hours long (organisation rule)")
    if end <= now:
        raise bad_input("scheduledEnd is in the past")


def parse_decimal(name: str, value: str, *, places: int, maximum: Decimal) -> Decimal:
    try:
        number = Decimal(value.strip())
    except (InvalidOperation, AttributeError):
        raise bad_input(f"{name} must be a decimal number, e.g. 12.50") from None
    if not number.is_finite() or number < 0 or number > maximum:
        raise bad_input(f"{name} must be between 0 and {maximum}")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise bad_input(f"{name} may have at most {places} decimal places")
    return number


def _zoned(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise bad_input(f"{name} must carry a zone offset (ISO 8601)")
    return value


def _region_id(value: str) -> str:
    # identity's region ids are UUIDs; anything else cannot name a region.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise bad_input("regionId is not a region id") from None


def _text(name: str, value: str, maximum: int, *, required: bool = True) -> str:
    value = value.strip()
    if required and not value:
        raise bad_input(f"{name} must not be empty")
    if len(value) > maximum:
        raise bad_input(f"{name} may be at most {maximum} characters")
    return value


class WorkOrdersService:
    def __init__(
        self,
        secrets: SecretsPort,
        identity: IdentityPort,
        crypto: ContactCrypto,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.secrets = secrets
        self.identity = identity
        self.crypto = crypto
        self.clock = clock

    # ---- audit ----------------------------------------------------------------------------

    async def audit(
        self,
        session: Reads,
        principal: Principal,
        action: str,
        *,
        outcome: Outcome = Outcome.ALLOWED,
        target_type: str = "",
        target_id: str = "",
        work_order_id: str = "",
        secret_ref_id: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        await record_event(
            session.events if isinstance(session, AuditingReader) else session,
            AuditOutbox,
            AuditRecord(
                org_id=principal.org_id,
                actor_id=principal.user_id,
                action=action,
                outcome=outcome,
                target_type=target_type,
                target_id=target_id,
                work_order_id=work_order_id,
                secret_ref_id=secret_ref_id,
                source_ip=source_ip.get(),
                details=details or {},
            ),
        )

    # ---- organisation settings --------------------------------------------------------------

    async def window_policy(self, session: AsyncSession, org_id: str) -> WindowPolicy:
        return WindowPolicy.of(await Repository(session).org_settings(org_id))

    async def get_window_policy(self, session: AsyncSession, principal: Principal) -> WindowPolicy:
        # Everybody of the organisation may know the rules their jobs follow.
        return await self.window_policy(session, principal.org_id)

    async def update_window_policy(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        lead_minutes: int | None,
        grace_minutes: int | None,
        max_window_hours: float | None,
        timezone: str | None,
    ) -> WindowPolicy:
        # Organisation settings are an administrator's alone (no policy action names them).
        if not principal.has_role(Role.ADMIN) or principal.scope.value != "full":
            raise DoorwardError(ErrorCode.FORBIDDEN, "only an administrator may change this")
        repo = Repository(session)
        current = await repo.org_settings(principal.org_id)
        lead = current.lead_minutes if lead_minutes is None else lead_minutes
        grace = current.grace_minutes if grace_minutes is None else grace_minutes
        max_window = (
            current.max_window_minutes if max_window_hours is None else round(max_window_hours * 60)
        )
        zone = current.timezone if timezone is None else timezone
        if not 0 <= lead <= MAX_LEAD_MINUTES:
            raise bad_input(f"leadMinutes must be between 0 and {MAX_LEAD_MINUTES}")
        if not 0 <= grace <= MAX_GRACE_MINUTES:
            raise bad_input(f"graceMinutes must be between 0 and {MAX_GRACE_MINUTES}")
        if not 15 <= max_window <= MAX_WINDOW_MINUTES_LIMIT:
            raise bad_input("maxWindowHours must be between 0.25 and 72")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise bad_input("timezone must be an IANA time zone name, e.g. Europe/Berlin") from None
        row = await repo.save_org_settings(principal.org_id, lead, grace, max_window, zone)
        await self.audit(
            session,
            principal,
            "org.access_window.update",
            target_type="Organisation",
            target_id=principal.org_id,
            details={
                "lead_minutes": lead,
                "grace_minutes": grace,
                "window_seconds": max_window * 60,
            },
        )
        return WindowPolicy.of(row)

    # ---- visibility -----------------------------------------------------------------------

    def _order_resource(self, order: WorkOrder, *, window: bool = False) -> Resource:
        return Resource(
            org_id=order.org_id,
            region_id=order.region_id,
            assignee_id=order.assignee_id,
            in_window=window,
        )

    async def visible_orders(
        self, session: AsyncSession, principal: Principal, ids: Collection[str]
    ) -> dict[str, WorkOrder]:
        """The work orders of `ids` the caller may read; the others are left out silently
        (references from other subgraphs, e.g. an auditor's AuditEvent.workOrder)."""
        rows = await Repository(session).work_orders(principal.org_id, ids)
        return {
            r.id: r for r in rows if can(principal, Action.WORKORDER_READ, self._order_resource(r))
        }

    async def requested_orders(
        self, session: AsyncSession, principal: Principal, ids: Collection[str]
    ) -> dict[str, WorkOrder]:
        """visible_orders for work orders the caller asked for by id (Query.workOrder): a
        refusal there is news for security ops, so each gets a decision span."""
        rows = await Repository(session).work_orders(principal.org_id, ids)
        visible: dict[str, WorkOrder] = {}
        for row in rows:
            decision = decide(principal, Action.WORKORDER_READ, self._order_resource(row))
            if decision.allowed:
                visible[row.id] = row
            else:
                # The caller sees "not found"; the span says why.
                record_denial(
                    SpanName.ACCESS_DECIDE,
                    decision.code,
                    org_id=principal.org_id,
                    actor_id=principal.user_id,
                    action=Action.WORKORDER_READ.value,
                    work_order_id=row.id,
                )
        return visible

    async def order_for(
        self,
        session: AsyncSession,
        principal: Principal,
        work_order_id: str,
        *,
        for_update: bool = False,
    ) -> WorkOrder:
        """A work order the caller may read, or NOT_FOUND."""
        row = await Repository(session).work_order(
            principal.org_id, work_order_id, for_update=for_update
        )
        if row is None:
            raise not_found("work order")
        decision = decide(principal, Action.WORKORDER_READ, self._order_resource(row))
        if not decision.allowed:
            # Answered as not found, but security ops see the refusal and why.
            record_denial(
                SpanName.ACCESS_DECIDE,
                decision.code,
                org_id=principal.org_id,
                actor_id=principal.user_id,
                action=Action.WORKORDER_READ.value,
                work_order_id=row.id,
            )
            raise not_found("work order")
        return row

    async def visible_sites(
        self, session: Reads, principal: Principal, ids: Collection[str]
    ) -> dict[str, SiteRow]:
        repo = Repository(session)
        rows = await repo.site_rows(principal.org_id, ids)
        mine = await self._field_user_sites(repo, principal, [r.id for r in rows])
        return _visible(principal, Action.SITE_READ, rows, mine)

    async def _field_user_sites(
        self, repo: Repository, principal: Principal, site_ids: list[str]
    ) -> set[str]:
        if not principal.roles & {Role.TECHNICIAN, Role.SUBCONTRACTOR}:
            return set()
        return await repo.sites_with_jobs_of(principal.org_id, principal.user_id, site_ids)

    async def site_for(self, session: AsyncSession, principal: Principal, site_id: str) -> SiteRow:
        sites = await self.visible_sites(session, principal, [site_id])
        if site_id not in sites:
            raise not_found("site")
        return sites[site_id]

    async def visible_customers(
        self, session: AsyncSession, principal: Principal, ids: Collection[str]
    ) -> dict[str, CustomerRow]:
        repo = Repository(session)
        rows = await repo.customer_rows(principal.org_id, ids)
        mine: set[str] = set()
        if principal.roles & {Role.TECHNICIAN, Role.SUBCONTRACTOR}:
            mine = await repo.customers_with_jobs_of(
                principal.org_id, principal.user_id, [r.id for r in rows]
            )
        return _visible(principal, Action.CUSTOMER_READ, rows, mine)

    async def customer_for(
        self, session: AsyncSession, principal: Principal, customer_id: str
    ) -> CustomerRow:
        found = await self.visible_customers(session, principal, [customer_id])
        if customer_id not in found:
            raise not_found("customer")
        return found[customer_id]

    async def list_customers(
        self,
        session: AsyncSession,
        principal: Principal,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Customer]:
        if only_assigned(principal, Action.CUSTOMER_READ):
            # Field staff reach customers through their jobs, not through a directory.
            return []
        regions = region_filter(principal, Action.CUSTOMER_READ)
        if regions is not None and not regions:
            return []
        return list(
            await Repository(session).list_customers(principal.org_id, regions, after, limit)
        )

    # ---- contact data ---------------------------------------------------------------------

    async def _contact_access(
        self, session: Reads, principal: Principal, customers: list[CustomerRow]
    ) -> dict[str, tuple[bool, bool]]:
        """customer id -> (may read, reduced to what the job needs)."""
        repo = Repository(session)
        ids = [c.id for c in customers]
        assigned: set[str] = set()
        windowed: set[str] = set()
        if principal.roles & {Role.TECHNICIAN, Role.SUBCONTRACTOR}:
            # Contact data is for the job at hand: a finished job from last year opens nothing.
            assigned = await repo.customers_with_jobs_of(
                principal.org_id, principal.user_id, ids, statuses=OPEN
            )
            if Role.SUBCONTRACTOR in principal.roles and assigned:
                windowed = await self._customers_in_window(
                    Repository(await _orm(session)), principal, assigned
                )
        result: dict[str, tuple[bool, bool]] = {}
        for customer in customers:
            resource = Resource(
                org_id=customer.org_id,
                region_id=customer.region_id,
                assignee_id=principal.user_id if customer.id in assigned else None,
                in_window=customer.id in windowed,
            )
            allowed = can(principal, Action.CUSTOMER_CONTACT_READ, resource)
            # The reduced view applies when nothing but the subcontractor rule lets them in.
            full = allowed and not (
                principal.roles & {Role.SUBCONTRACTOR}
                and not principal.roles & {Role.ADMIN, Role.DISPATCHER, Role.TECHNICIAN}
            )
            result[customer.id] = (allowed, allowed and not full)
        return result

    async def _customers_in_window(
        self, repo: Repository, principal: Principal, customer_ids: set[str]
    ) -> set[str]:
        policy = WindowPolicy.of(await repo.org_settings(principal.org_id))
        sites = await repo.sites_of_customers(principal.org_id, customer_ids)
        by_site = {s.id: s.customer_id for s in sites}
        orders = await repo.orders_at_sites(principal.org_id, list(by_site))
        now = self.clock()
        return {
            by_site[o.site_id]
            for o in orders
            if o.assignee_id == principal.user_id and in_window(o, policy, now)
        }

    async def read_contacts(
        self, session: AsyncSession, principal: Principal, customer_ids: Collection[str]
    ) -> dict[str, Contact]:
        """Decrypt the contact fields the caller may see; each customer read is audited."""
        customers = list((await self.visible_customers(session, principal, customer_ids)).values())
        access = await self._contact_access(session, principal, customers)
        result: dict[str, Contact] = {}
        for customer in customers:
            allowed, reduced = access[customer.id]
            if not allowed:
                result[customer.id] = Contact(customer.id, None, None, None)
                await self.audit(
                    session,
                    principal,
                    "customer.contact.read",
                    outcome=Outcome.DENIED,
                    target_type="Customer",
                    target_id=customer.id,
                    details={"reason": "outside_window"},
                )
                continue
            if customer.erased_at is not None or customer.contact is None:
                result[customer.id] = Contact(customer.id, None, None, None, erased=True)
                continue
            if customer.restricted:
                # Art. 18: stored, never opened; the attempt is on the trail.
                result[customer.id] = Contact(customer.id, None, None, None)
                await self._audit_restricted(session, principal, customer.id)
                continue
            key = await self.crypto.key_for(principal.org_id, customer.id, customer.wrapped_key)
            try:
                text = self._open(key, contact_binding(customer.id), customer.contact)
            except CiphertextRejected:
                await self._audit_unreadable(session, principal, customer.id, "contact")
                result[customer.id] = Contact(customer.id, None, None, None, unreadable=True)
                continue
            if text.resealed is not None:
                await Repository(session).reseal_contact(
                    principal.org_id, customer.id, customer.contact, text.resealed
                )
            data = json.loads(text.value)
            result[customer.id] = Contact(
                customer.id,
                data.get("name"),
                None if reduced else data.get("phone"),
                None if reduced else data.get("email"),
            )
            await self.audit(
                session,
                principal,
                "customer.contact.read",
                target_type="Customer",
                target_id=customer.id,
                details={"scope": "reduced" if reduced else "full"},
            )
        return result

    async def read_addresses(
        self, session: AsyncSession, principal: Principal, site_ids: Collection[str]
    ) -> dict[str, str | Unreadable | None]:
        """Site addresses are contact data too (sealed with the customer's key)."""
        sites = list((await self.visible_sites(session, principal, site_ids)).values())
        return await self.read_site_addresses(session, principal, sites)

    async def read_site_addresses(
        self, session: Reads, principal: Principal, sites: Collection[SiteRow]
    ) -> dict[str, str | Unreadable | None]:
        """read_addresses of sites already found visible to this caller (visible_sites of the
        same principal, e.g. the request's site loader): the sites are not read again."""
        customers = await Repository(session).customer_rows(
            principal.org_id, {s.customer_id for s in sites}
        )
        by_id = {c.id: c for c in customers}
        access = await self._contact_access(session, principal, customers)
        result: dict[str, str | Unreadable | None] = {}
        for site in sites:
            customer = by_id[site.customer_id]
            allowed, _ = access[customer.id]
            if not allowed:
                result[site.id] = None
                await self.audit(
                    session,
                    principal,
                    "customer.contact.read",
                    outcome=Outcome.DENIED,
                    target_type="Customer",
                    target_id=customer.id,
                    details={"reason": "outside_window", "field": "address", "site_id": site.id},
                )
                continue
            if site.address is None or customer.erased_at is not None:
                result[site.id] = None
                continue
            if customer.restricted:
                result[site.id] = None
                await self._audit_restricted(session, principal, customer.id, site.id)
                continue
            key = await self.crypto.key_for(principal.org_id, customer.id, customer.wrapped_key)
            try:
                text = self._open(key, address_binding(customer.id, site.id), site.address)
            except CiphertextRejected:
                await self._audit_unreadable(session, principal, customer.id, "address", site.id)
                result[site.id] = Unreadable(site.id)
                continue
            if text.resealed is not None:
                await Repository(await _orm(session)).reseal_address(
                    principal.org_id, site.id, site.address, text.resealed
                )
            result[site.id] = text.value
            await self.audit(
                session,
                principal,
                "customer.contact.read",
                target_type="Customer",
                target_id=customer.id,
                details={"field": "address", "site_id": site.id},
            )
        return result

    def _open(self, key: bytes, binding: Binding, sealed: bytes) -> _Plain:
        """Open a stored field where it is read; a v1 ciphertext (upgrade mode only) comes back
        with its v2 form for the caller to store in place of it."""
        opened = self.crypto.open(key, binding, sealed)
        return _Plain(opened.text, seal(key, binding, opened.text) if opened.legacy else None)

    async def _audit_restricted(
        self, session: Reads, principal: Principal, customer_id: str, site_id: str = ""
    ) -> None:
        details = {"reason": "restricted", "field": "address" if site_id else "contact"}
        if site_id:
            details["site_id"] = site_id
        await self.audit(
            session,
            principal,
            "customer.contact.read",
            outcome=Outcome.DENIED,
            target_type="Customer",
            target_id=customer_id,
            details=details,
        )

    async def _audit_unreadable(
        self,
        session: Reads,
        principal: Principal,
        customer_id: str,
        field: str,
        site_id: str = "",
    ) -> None:
        """A ciphertext that does not open where it is stored was tampered with or moved (a
        database writer swapping fields or sites): on the trail, and loud in the log."""
        details = {"reason": "integrity", "field": field}
        if site_id:
            details["site_id"] = site_id
        log.error(
            "customer data failed its integrity check",
            extra={"fields": {"customer.id": customer_id, "field": field, "site.id": site_id}},
        )
        await self.audit(
            session,
            principal,
            "customer.contact.read",
            outcome=Outcome.ERROR,
            target_type="Customer",
            target_id=customer_id,
            details=details,
        )

    # ---- customers and sites --------------------------------------------------------------

    async def create_customer(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        name: str,
        phone: str,
        email: str,
        region_id: str,
    ) -> Customer:
        region_id = _region_id(region_id)
        authorize(principal, Action.CUSTOMER_CREATE, Resource(principal.org_id, region_id))
        await self._require_region(principal, region_id)
        name = _text("name", name, 200)
        phone = _text("phone", phone, 64, required=False)
        email = _text("email", email, 254, required=False)
        if email and "@" not in email:
            raise bad_input("email must be an email address")
        customer_id = str(uuid.uuid4())
        key = await self.crypto.new_key(principal.org_id, customer_id)
        row = Customer(
            id=customer_id,
            org_id=principal.org_id,
            region_id=region_id,
            wrapped_key=key.wrapped,
            key_version=key.version,
            contact=seal(
                key.plaintext,
                contact_binding(customer_id),
                json.dumps({"name": name, "phone": phone, "email": email}),
            ),
            created_at=self.clock(),
        )
        repo = Repository(session)
        repo.add(row)
        await repo.flush()
        await self.audit(
            session,
            principal,
            "customer.create",
            target_type="Customer",
            target_id=customer_id,
            details={"region_id": region_id},
        )
        return row

    async def _require_region(self, principal: Principal, region_id: str) -> None:
        """An admin's region id is not vouched for by their token: ask identity, so a
        customer can never be filed under another organisation's or a made-up region."""
        if principal.holds_region(region_id):
            return
        if region_id not in await self.identity.existing_region_ids(principal.org_id, [region_id]):
            raise bad_input("regionId: no such region in this organisation")

    async def create_site(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        customer_id: str,
        address: str,
        region_id: str,
    ) -> Site:
        customer = await self.customer_for(session, principal, customer_id)
        region_id = _region_id(region_id)
        authorize(principal, Action.SITE_CREATE, Resource(principal.org_id, region_id))
        await self._require_region(principal, region_id)
        if customer.erased_at is not None:
            raise conflict("this customer has been erased")
        address = _text("address", address, 500)
        key = await self.crypto.key_for(principal.org_id, customer.id, customer.wrapped_key)
        site_id = str(uuid.uuid4())
        row = Site(
            id=site_id,
            org_id=principal.org_id,
            customer_id=customer.id,
            region_id=region_id,
            address=seal(key, address_binding(customer.id, site_id), address),
            created_at=self.clock(),
        )
        repo = Repository(session)
        repo.add(row)
        await repo.flush()
        await self.audit(
            session,
            principal,
            "site.create",
            target_type="Site",
            target_id=row.id,
            details={"customer_id": customer.id, "region_id": region_id},
        )
        return row

    # ---- work orders: reads ---------------------------------------------------------------

    async def list_work_orders(
        self,
        session: Reads,
        principal: Principal,
        *,
        status: str | None,
        region_id: str | None,
        assignee_id: str | None,
        start_from: datetime | None,
        start_to: datetime | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[OrderRow]:
        _zoned("from", start_from)
        _zoned("to", start_to)
        regions = region_filter(principal, Action.WORKORDER_READ)
        if regions is not None and not regions:
            return []
        if only_assigned(principal, Action.WORKORDER_READ):
            if assignee_id is not None and assignee_id != principal.user_id:
                return []  # another person's jobs: nothing, whatever the filter says
            assignee_id = principal.user_id
        return await Repository(session).list_work_orders(
            principal.org_id,
            regions=regions,
            assignee_id=assignee_id,
            status=status,
            region_id=region_id,
            start_from=start_from,
            start_to=start_to,
            after=after,
            limit=limit,
        )

    async def my_jobs(
        self, session: AsyncSession, principal: Principal, day: date | None
    ) -> list[WorkOrder]:
        """The caller's jobs whose window touches `day` in the organisation's time zone
        (UTC unless an administrator set one); today when no day is given."""
        if not principal.roles & {Role.TECHNICIAN, Role.SUBCONTRACTOR}:
            return []
        repo = Repository(session)
        policy = WindowPolicy.of(await repo.org_settings(principal.org_id))
        zone = ZoneInfo(policy.timezone)
        day = day or self.clock().astimezone(zone).date()
        if not 1970 <= day.year <= 9000:
            raise bad_input("date must be between 1970 and 9000")
        start = datetime.combine(day, time.min, tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
        rows = await repo.jobs_of(
            principal.org_id,
            principal.user_id,
            start,
            end,
            regions=principal.region_ids,
            exclude_cancelled=True,
            max_window=max(policy.max_window, timedelta(hours=72)),
        )
        return [r for r in rows if can(principal, Action.WORKORDER_READ, self._order_resource(r))]

    async def assigned_work_orders(
        self,
        session: AsyncSession,
        principal: Principal,
        user_id: str,
        start_from: datetime | None,
        start_to: datetime | None,
    ) -> list[WorkOrder]:
        _zoned("from", start_from)
        _zoned("to", start_to)
        regions = region_filter(principal, Action.WORKORDER_READ)
        if only_assigned(principal, Action.WORKORDER_READ) and user_id != principal.user_id:
            raise DoorwardError(ErrorCode.FORBIDDEN, "you may see only your own work orders")
        if regions is not None and not regions:
            return []
        rows = await Repository(session).jobs_of(
            principal.org_id, user_id, start_from, start_to, regions=regions
        )
        return [r for r in rows if can(principal, Action.WORKORDER_READ, self._order_resource(r))]

    # ---- work orders: the state machine ---------------------------------------------------

    async def create_work_order(
        self, session: AsyncSession, principal: Principal, site_id: str, data: WorkOrderInput
    ) -> WorkOrder:
        site = await self.site_for(session, principal, site_id)
        authorize(principal, Action.WORKORDER_CREATE, Resource(site.org_id, site.region_id))
        repo = Repository(session)
        await self._require_unrestricted(repo, site, "create a work order")
        policy = WindowPolicy.of(await repo.org_settings(principal.org_id))
        title = _text("title", data.title or "", MAX_TITLE)
        description = _text("description", data.description or "", MAX_DESCRIPTION, required=False)
        priority = data.priority or "NORMAL"
        if priority not in PRIORITIES:
            raise bad_input("priority must be one of " + ", ".join(PRIORITIES))
        now = self.clock()
        check_schedule(data.scheduled_start, data.scheduled_end, policy, now)
        scheduled = data.scheduled_start is not None and data.scheduled_end is not None
        row = WorkOrder(
            id=str(uuid.uuid4()),
            org_id=principal.org_id,
            number=await repo.next_number(principal.org_id),
            site_id=site.id,
            region_id=site.region_id,
            title=title,
            description=description,
            status="SCHEDULED" if scheduled else "DRAFT",
            priority=priority,
            scheduled_start=data.scheduled_start,
            scheduled_end=data.scheduled_end,
            created_by=principal.user_id,
            created_at=now,
            updated_at=now,
        )
        repo.add(row)
        await repo.flush()
        await self.audit(
            session,
            principal,
            "workorder.create",
            target_type="WorkOrder",
            target_id=row.id,
            work_order_id=row.id,
            details={"status": row.status, "site_id": site.id, "priority": priority},
        )
        return row

    async def _require_unrestricted(
        self, repo: Repository, site: Site | SiteRow, move: str
    ) -> None:
        customer = await repo.customer(site.org_id, site.customer_id)
        if customer is not None and customer.restricted:
            raise Refusal(
                ErrorCode.CONFLICT,
                f"cannot {move} for a customer whose processing is restricted",
                "customer_restricted",
            )

    async def _require_unrestricted_order(
        self, session: AsyncSession, order: WorkOrder, move: str
    ) -> None:
        repo = Repository(session)
        sites = await repo.sites(order.org_id, [order.site_id])
        if sites:
            await self._require_unrestricted(repo, sites[0], f"{move} a work order")

    async def _for_change(
        self, session: AsyncSession, principal: Principal, work_order_id: str, action: Action
    ) -> WorkOrder:
        order = await self.order_for(session, principal, work_order_id, for_update=True)
        authorize(principal, action, self._order_resource(order))
        return order

    def _require_status(self, order: WorkOrder, move: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if order.status not in allowed:
            raise conflict(
                f"cannot {move} a work order that is {order.status} "
                f"(allowed from: {', '.join(allowed)})"
            )

    async def _changed(
        self,
        session: AsyncSession,
        principal: Principal,
        order: WorkOrder,
        action: str,
        previous: str,
        details: dict[str, Any] | None = None,
    ) -> WorkOrder:
        order.updated_at = self.clock()
        await session.flush()
        await self.audit(
            session,
            principal,
            action,
            target_type="WorkOrder",
            target_id=order.id,
            work_order_id=order.id,
            details={"previous_status": previous, "new_status": order.status, **(details or {})},
        )
        return order

    async def update_work_order(
        self, session: AsyncSession, principal: Principal, work_order_id: str, data: WorkOrderInput
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.WORKORDER_UPDATE)
        # A running job may still be extended (a job running late); a closed one is history.
        self._require_status(order, "update", OPEN)
        previous = order.status
        changed: list[str] = []
        if data.title is not None:
            order.title = _text("title", data.title, MAX_TITLE)
            changed.append("title")
        if data.description is not None:
            order.description = _text(
                "description", data.description, MAX_DESCRIPTION, required=False
            )
            changed.append("description")
        if data.priority is not None:
            if data.priority not in PRIORITIES:
                raise bad_input("priority must be one of " + ", ".join(PRIORITIES))
            order.priority = data.priority
            changed.append("priority")
        start = data.scheduled_start if data.scheduled_start is not None else order.scheduled_start
        end = data.scheduled_end if data.scheduled_end is not None else order.scheduled_end
        rescheduled = (start, end) != (order.scheduled_start, order.scheduled_end)
        if rescheduled:
            policy = await self.window_policy(session, principal.org_id)
            check_schedule(start, end, policy, self.clock())
            order.scheduled_start, order.scheduled_end = start, end
            changed.append("schedule")
            if order.status == "DRAFT" and start is not None and end is not None:
                order.status = "SCHEDULED"
            if order.status in ACTIVE:
                # Grants issued for the old window must not outlive it.
                Repository(session).owe_revocation(order.org_id, order.id, "rescheduled")
        return await self._changed(
            session, principal, order, "workorder.update", previous, {"fields": ",".join(changed)}
        )

    async def assign(
        self, session: AsyncSession, principal: Principal, work_order_id: str, assignee_id: str
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.WORKORDER_ASSIGN)
        self._require_status(order, "assign", ("DRAFT", "SCHEDULED", "DISPATCHED"))
        await self._require_unrestricted_order(session, order, "assign")
        await self._check_assignee(order, assignee_id, principal)
        previous_assignee = order.assignee_id
        previous = order.status
        if previous_assignee and previous_assignee != assignee_id:
            Repository(session).owe_revocation(order.org_id, order.id, "reassigned")
        order.assignee_id = assignee_id
        details: dict[str, Any] = {"assignee_id": assignee_id}
        if previous_assignee:
            details["previous_assignee_id"] = previous_assignee
        return await self._changed(session, principal, order, "workorder.assign", previous, details)

    async def _check_assignee(
        self, order: WorkOrder, assignee_id: str, principal: Principal | None = None
    ) -> None:
        users = await self.identity.get_users(order.org_id, [assignee_id])
        user = next((u for u in users if u.id == assignee_id and u.org_id == order.org_id), None)
        if (
            user is not None
            and principal is not None
            and not can_read_user(principal, user.org_id, user.id, user.region_ids)
        ):
            # Someone the caller may not see (another region's person): the same answer as for
            # an unknown id, so the reasons below reveal nothing about them.
            user = None
        if user is None:
            raise _assignee_refused("assignee: no such user in this organisation", "not_found")
        if not user.active:
            raise _assignee_refused("assignee: the user is not ACTIVE", "deactivated")
        if not user.roles & FIELD_ROLES:
            raise _assignee_refused(
                "assignee: must be a TECHNICIAN or SUBCONTRACTOR", "role_denied"
            )
        if order.region_id not in user.region_ids:
            raise _assignee_refused(
                "assignee: the user does not hold the work order's region", "region_denied"
            )

    async def dispatch(
        self, session: AsyncSession, principal: Principal, work_order_id: str
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.WORKORDER_DISPATCH)
        self._require_status(order, "dispatch", ("SCHEDULED",))
        await self._require_unrestricted_order(session, order, "dispatch")
        if not order.assignee_id:
            raise conflict("cannot dispatch a work order without an assignee")
        # The assignee may have been deactivated or moved since assignment.
        await self._check_assignee(order, order.assignee_id)
        previous = order.status
        order.status = "DISPATCHED"
        return await self._changed(session, principal, order, "workorder.dispatch", previous)

    async def start(
        self, session: AsyncSession, principal: Principal, work_order_id: str
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.WORKORDER_START)
        self._require_status(order, "start", ("DISPATCHED",))
        previous = order.status
        order.status = "IN_PROGRESS"
        return await self._changed(session, principal, order, "workorder.start", previous)

    async def complete(
        self, session: AsyncSession, principal: Principal, work_order_id: str
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.WORKORDER_COMPLETE)
        self._require_status(order, "complete", ("IN_PROGRESS",))
        previous = order.status
        order.status = "COMPLETED"
        order.completed_at = self.clock()
        Repository(session).owe_revocation(order.org_id, order.id, "completed")
        return await self._changed(session, principal, order, "workorder.complete", previous)

    async def cancel(
        self, session: AsyncSession, principal: Principal, work_order_id: str, reason: str
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.WORKORDER_CANCEL)
        self._require_status(order, "cancel", OPEN)
        order.cancel_reason = _text("reason", reason, 1000)
        previous = order.status
        order.status = "CANCELLED"
        Repository(session).owe_revocation(order.org_id, order.id, "cancelled")
        return await self._changed(session, principal, order, "workorder.cancel", previous)

    # ---- invoice lines and notes ----------------------------------------------------------

    async def add_invoice_line(
        self,
        session: AsyncSession,
        principal: Principal,
        work_order_id: str,
        description: str,
        quantity: str,
        unit_price: str,
    ) -> WorkOrder:
        order = await self._for_change(
            session, principal, work_order_id, Action.WORKORDER_INVOICE_EDIT
        )
        self._require_status(
            order, "invoice", ("DRAFT", "SCHEDULED", "DISPATCHED", "IN_PROGRESS", "COMPLETED")
        )
        line = InvoiceLine(
            id=str(uuid.uuid4()),
            org_id=order.org_id,
            work_order_id=order.id,
            description=_text("description", description, 500),
            quantity=parse_decimal("quantity", quantity, places=3, maximum=Decimal("999999")),
            unit_price=parse_decimal(
                "unitPrice", unit_price, places=2, maximum=Decimal("9999999999")
            ),
            created_at=self.clock(),
        )
        Repository(session).add(line)
        await session.flush()
        await self.audit(
            session,
            principal,
            "workorder.invoice.add",
            target_type="InvoiceLine",
            target_id=line.id,
            work_order_id=order.id,
        )
        return order

    async def remove_invoice_line(
        self, session: AsyncSession, principal: Principal, line_id: str
    ) -> WorkOrder:
        repo = Repository(session)
        line = await repo.invoice_line(principal.org_id, line_id)
        if line is None:
            raise not_found("invoice line")
        order = await self._for_change(
            session, principal, line.work_order_id, Action.WORKORDER_INVOICE_EDIT
        )
        await repo.delete_invoice_line(principal.org_id, line_id)
        await self.audit(
            session,
            principal,
            "workorder.invoice.remove",
            target_type="InvoiceLine",
            target_id=line_id,
            work_order_id=order.id,
        )
        return order

    async def add_note(
        self, session: AsyncSession, principal: Principal, work_order_id: str, text: str
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.WORKORDER_NOTE_ADD)
        self._require_status(order, "add a note to", OPEN)
        note = WorkNote(
            id=str(uuid.uuid4()),
            org_id=order.org_id,
            work_order_id=order.id,
            author_id=principal.user_id,
            text=_text("text", text, MAX_NOTE),
            created_at=self.clock(),
        )
        Repository(session).add(note)
        await session.flush()
        await self.audit(
            session,
            principal,
            "workorder.note.add",
            target_type="WorkNote",
            target_id=note.id,
            work_order_id=order.id,
        )
        return order

    # ---- secret references ----------------------------------------------------------------

    async def prepare_upload(
        self, session: AsyncSession, principal: Principal, site_id: str, kind: str, label: str
    ) -> UploadSlotView:
        site = await self.site_for(session, principal, site_id)
        authorize(principal, Action.SECRET_UPLOAD, Resource(site.org_id, site.region_id))
        if kind not in SECRET_KINDS:
            raise bad_input("kind must be one of " + ", ".join(SECRET_KINDS))
        label = _text("label", label, MAX_LABEL)
        slot = await self.secrets.prepare_upload(
            site_id=site.id,
            region_id=site.region_id,
            kind=kind,
            label=label,
            secret_ref_id="",
            bearer=principal.token,
        )
        await Repository(session).add_site_secret(principal.org_id, site.id, slot.secret_ref.id)
        await self.audit(
            session,
            principal,
            "secret.upload.prepare",
            target_type="SecretRef",
            target_id=slot.secret_ref.id,
            secret_ref_id=slot.secret_ref.id,
            details={"site_id": site.id, "kind": kind},
        )
        return slot

    async def _site_of_secret(
        self, session: AsyncSession, principal: Principal, secret_ref_id: str
    ) -> SiteRow:
        link = await Repository(session).site_secret(principal.org_id, secret_ref_id)
        if link is None:
            raise not_found("secret reference")
        sites = await self.visible_sites(session, principal, [link.site_id])
        if link.site_id not in sites:
            raise not_found("secret reference")
        return sites[link.site_id]

    async def prepare_rotation(
        self, session: AsyncSession, principal: Principal, secret_ref_id: str
    ) -> UploadSlotView:
        site = await self._site_of_secret(session, principal, secret_ref_id)
        authorize(principal, Action.SECRET_ROTATE, Resource(site.org_id, site.region_id))
        slot = await self.secrets.prepare_upload(
            site_id=site.id,
            region_id=site.region_id,
            kind="",
            label="",
            secret_ref_id=secret_ref_id,
            bearer=principal.token,
        )
        await self.audit(
            session,
            principal,
            "secret.rotation.prepare",
            target_type="SecretRef",
            target_id=secret_ref_id,
            secret_ref_id=secret_ref_id,
            details={"site_id": site.id},
        )
        return slot

    async def attach_secret(
        self, session: AsyncSession, principal: Principal, work_order_id: str, secret_ref_id: str
    ) -> WorkOrder:
        order = await self._for_change(session, principal, work_order_id, Action.SECRET_ATTACH)
        self._require_status(order, "attach a secret to", OPEN)
        link = await Repository(session).site_secret(principal.org_id, secret_ref_id)
        if link is None:
            raise not_found("secret reference")
        if link.site_id != order.site_id:
            raise conflict("the secret belongs to another site than the work order")
        await Repository(session).attach(
            principal.org_id, order.id, secret_ref_id, principal.user_id
        )
        await self.audit(
            session,
            principal,
            "secret.attach",
            target_type="WorkOrder",
            target_id=order.id,
            work_order_id=order.id,
            secret_ref_id=secret_ref_id,
        )
        return order

    async def check_secret_access(
        self, session: AsyncSession, principal: Principal, work_order_id: str, secret_ref_id: str
    ) -> tuple[WorkOrder, WindowPolicy]:
        """The contract's window rules, in the order that tells the caller the most useful
        thing without revealing what they may not see."""
        try:
            order = await self.order_for(session, principal, work_order_id)
        except DoorwardError:
            raise Refusal(
                ErrorCode.NOT_FOUND, "work order not found", "work_order_not_found"
            ) from None
        # Role and ownership first (as if in window): dispatchers and admins never get values.
        if not can(
            principal, Action.SECRET_ACCESS_REQUEST, self._order_resource(order, window=True)
        ):
            raise Refusal(
                ErrorCode.FORBIDDEN,
                "only the work order's assignee may request its secrets",
                "not_assignee",
            )
        policy = await self.window_policy(session, principal.org_id)
        if order.status not in ACTIVE:
            raise Refusal(
                ErrorCode.OUTSIDE_ACCESS_WINDOW,
                f"secrets are available only while the work order is DISPATCHED or "
                f"IN_PROGRESS (it is {order.status})",
                "status_" + order.status.lower(),
            )
        if not in_window(order, policy, self.clock()):
            raise Refusal(
                ErrorCode.OUTSIDE_ACCESS_WINDOW,
                "the work order is outside its access window",
                "outside_window",
            )
        attached = (await Repository(session).secrets_of_orders(principal.org_id, [order.id]))[
            order.id
        ]
        if secret_ref_id not in attached:
            raise Refusal(
                ErrorCode.CONFLICT,
                "this secret is not attached to the work order",
                "secret_not_attached",
            )
        authorize(principal, Action.SECRET_ACCESS_REQUEST, self._order_resource(order, window=True))
        return order, policy

    async def request_access(
        self, session: AsyncSession, principal: Principal, work_order_id: str, secret_ref_id: str
    ) -> GrantView:
        order, policy = await self.check_secret_access(
            session, principal, work_order_id, secret_ref_id
        )
        window = access_window(order, policy)
        assert window is not None
        grant = await self.secrets.issue_grant(
            work_order_id=order.id,
            secret_ref_id=secret_ref_id,
            window_start=window[0],
            window_end=window[1],
            break_glass=None,
            reason="",
            bearer=principal.token,
        )
        await self.audit(
            session,
            principal,
            "secret.access.request",
            target_type="SecretRef",
            target_id=secret_ref_id,
            work_order_id=order.id,
            secret_ref_id=secret_ref_id,
            details={"grant_id": grant.id},
        )
        return grant

    async def secret_refs(self, org_id: str, ids: Collection[str]) -> dict[str, SecretRefView]:
        if not ids:
            return {}
        refs = await self.secrets.get_refs(org_id, ref_ids=list(ids))
        return {r.id: r for r in refs}

    # ---- the secrets service's second opinion ---------------------------------------------

    async def access_context(
        self, session: AsyncSession, org_id: str, work_order_id: str
    ) -> AccessContextView:
        repo = Repository(session)
        order = await repo.work_order(org_id, work_order_id)
        if order is None:
            raise not_found("work order")
        policy = WindowPolicy.of(await repo.org_settings(org_id))
        refs = (await repo.secrets_of_orders(org_id, [order.id]))[order.id]
        return AccessContextView(order=order, policy=policy, secret_ref_ids=refs)

    # ---- GDPR -----------------------------------------------------------------------------

    async def export_customer(
        self, session: AsyncSession, principal: Principal, customer_id: str
    ) -> str:
        customer = await self.customer_for(session, principal, customer_id)
        authorize(principal, Action.CUSTOMER_EXPORT, Resource(customer.org_id, customer.region_id))
        repo = Repository(session)
        contact: dict[str, Any] = {}
        key: bytes | None = None
        if customer.erased_at is None and customer.contact is not None:
            key = await self.crypto.key_for(principal.org_id, customer.id, customer.wrapped_key)
            # A tampered field fails the whole export (CiphertextRejected): a partial or
            # wrong-field answer to a subject access request is worse than an error.
            contact = json.loads(
                self._open(key, contact_binding(customer.id), customer.contact).value
            )
        sites = await repo.sites_of_customers(principal.org_id, [customer.id])
        site_refs = await repo.secrets_of_sites(principal.org_id, [s.id for s in sites])
        orders = await repo.orders_at_sites(principal.org_id, [s.id for s in sites])
        order_ids = [o.id for o in orders]
        lines = await repo.invoice_lines(principal.org_id, order_ids)
        notes = await repo.notes(principal.org_id, order_ids)
        attached = await repo.secrets_of_orders(principal.org_id, order_ids)
        all_refs = {r for refs in site_refs.values() for r in refs}
        ref_meta = await self.secret_refs(principal.org_id, all_refs)

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        document = {
            "exportedAt": self.clock().isoformat(),
            "customer": {
                "id": customer.id,
                "regionId": customer.region_id,
                "createdAt": iso(customer.created_at),
                "erasedAt": iso(customer.erased_at),
                "name": contact.get("name"),
                "phone": contact.get("phone"),
                "email": contact.get("email"),
            },
            "sites": [
                {
                    "id": s.id,
                    "regionId": s.region_id,
                    "address": self._open(key, address_binding(customer.id, s.id), s.address).value
                    if key is not None and s.address is not None
                    else None,
                    "secretRefs": [
                        {
                            "id": r,
                            "kind": ref_meta[r].kind if r in ref_meta else None,
                            "label": ref_meta[r].label if r in ref_meta else None,
                            "version": ref_meta[r].version if r in ref_meta else None,
                        }
                        for r in site_refs.get(s.id, [])
                    ],
                }
                for s in sites
            ],
            "workOrders": [
                {
                    "id": o.id,
                    "number": o.number,
                    "siteId": o.site_id,
                    "title": o.title,
                    "description": o.description,
                    "status": o.status,
                    "priority": o.priority,
                    "scheduledStart": iso(o.scheduled_start),
                    "scheduledEnd": iso(o.scheduled_end),
                    "assigneeId": o.assignee_id,
                    "createdAt": iso(o.created_at),
                    "completedAt": iso(o.completed_at),
                    "cancelReason": o.cancel_reason,
                    "secretRefIds": attached.get(o.id, []),
                    "invoiceLines": [
                        {
                            "description": line.description,
                            "quantity": str(line.quantity),
                            "unitPrice": str(line.unit_price),
                        }
                        for line in lines.get(o.id, [])
                    ],
                    "notes": [
                        {"authorId": n.author_id, "text": n.text, "createdAt": iso(n.created_at)}
                        for n in notes.get(o.id, [])
                    ],
                }
                for o in orders
            ],
        }
        export_id = str(uuid.uuid4())
        await self.audit(
            session,
            principal,
            "customer.export",
            target_type="Customer",
            target_id=customer.id,
            details={"export_id": export_id, "count": len(orders)},
        )
        return json.dumps(document, sort_keys=True)

    async def erase_customer(
        self, session: AsyncSession, principal: Principal, customer_id: str, reason: str
    ) -> Customer:
        customer = await self.customer_for(session, principal, customer_id)
        authorize(principal, Action.CUSTOMER_ERASE, Resource(customer.org_id, customer.region_id))
        _text("reason", reason, 1000)
        if customer.erased_at is not None:
            raise conflict("this customer has already been erased")
        repo = Repository(session)
        if await repo.customer_held(principal.org_id, customer.id):
            # A legal hold suspends deletion (GDPR Art. 17(3)(e)): release it first.
            raise Refusal(
                ErrorCode.CONFLICT, "a legal hold covers this customer's data", "legal_hold"
            )
        sites = await repo.sites_of_customers(principal.org_id, [customer.id])
        deleted = 0
        for site in sites:
            deleted += await self.secrets.delete_site_secrets(site.id, bearer=principal.token)
        for order in await repo.orders_at_sites(principal.org_id, [s.id for s in sites]):
            if order.status in OPEN:
                repo.owe_revocation(order.org_id, order.id, "cancelled")
        # The key goes last: if anything above failed, the erasure can simply be retried.
        # Secrets destroys the key only for the verified ADMIN token acting for this erasure.
        await self.secrets.destroy_customer_key(customer.id, bearer=principal.token)
        self.crypto.cache.forget(customer.id)
        await repo.erase_customer(principal.org_id, customer.id)
        await self.audit(
            session,
            principal,
            "customer.erase",
            target_type="Customer",
            target_id=customer.id,
            details={"count": deleted},
        )
        refreshed = await repo.customer(principal.org_id, customer.id)
        assert refreshed is not None
        await session.refresh(refreshed)
        return refreshed

    async def set_restriction(
        self,
        session: AsyncSession,
        principal: Principal,
        customer_id: str,
        restricted: bool,
        reason: str,
    ) -> Customer:
        """GDPR Art. 18: restrict (or lift the restriction of) the processing of a customer's
        data. Every change is recorded with its reason here and audited with ids only."""
        found = await self.customer_for(session, principal, customer_id)
        authorize(principal, Action.CUSTOMER_RESTRICT, Resource(found.org_id, found.region_id))
        reason = _text("reason", reason, 1000)
        repo = Repository(session)
        await repo.lock_customer(principal.org_id, found.id)
        # The flag as it is now, under the lock (the row read above may be older).
        customer = await repo.customer(principal.org_id, found.id)
        assert customer is not None
        await session.refresh(customer)
        if customer.erased_at is not None:
            raise conflict("this customer has been erased")
        if customer.restricted == restricted:
            raise conflict(
                "this customer is already " + ("restricted" if restricted else "not restricted")
            )
        change = CustomerRestriction(
            id=str(uuid.uuid4()),
            org_id=principal.org_id,
            customer_id=customer.id,
            restricted=restricted,
            actor_id=principal.user_id,
            reason=reason,
            created_at=self.clock(),
        )
        customer.restricted = restricted
        repo.add(change)
        await repo.flush()
        await self.audit(
            session,
            principal,
            "customer.restrict" if restricted else "customer.unrestrict",
            target_type="Customer",
            target_id=customer.id,
            details={"request_id": change.id},
        )
        return customer

    # ---- loaders for the graph --------------------------------------------------------------

    async def invoice_lines(
        self, session: AsyncSession, principal: Principal, order_ids: Collection[str]
    ) -> dict[str, list[InvoiceLine]]:
        return await Repository(session).invoice_lines(principal.org_id, order_ids)

    async def notes(
        self, session: AsyncSession, principal: Principal, order_ids: Collection[str]
    ) -> dict[str, list[WorkNote]]:
        return await Repository(session).notes(principal.org_id, order_ids)

    async def secret_ids_of_orders(
        self, session: Reads, principal: Principal, order_ids: Collection[str]
    ) -> dict[str, list[str]]:
        return await Repository(session).secrets_of_orders(principal.org_id, order_ids)

    async def secret_ids_of_sites(
        self, session: AsyncSession, principal: Principal, site_ids: Collection[str]
    ) -> dict[str, list[str]]:
        return await Repository(session).secrets_of_sites(principal.org_id, site_ids)

    async def sites_of_customers(
        self, session: AsyncSession, principal: Principal, customer_ids: Collection[str]
    ) -> list[SiteRow]:
        repo = Repository(session)
        rows = await repo.site_rows_of_customers(principal.org_id, customer_ids)
        mine = await self._field_user_sites(repo, principal, [r.id for r in rows])
        visible = _visible(principal, Action.SITE_READ, rows, mine)
        return [r for r in rows if r.id in visible]
