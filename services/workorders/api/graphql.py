"""Work orders' GraphQL subgraph (Federation v2): the contract's names, exactly.

Every resolver and every resolve_reference verifies the caller's token through the context and
goes through the rules (which ask doorward_kit.policy); `_entities` is not a back door. Related
objects load through per-request DataLoaders, so a list of N work orders costs one query per
relation, not N. Refusals of mutations are audited (DENIED) in their own transaction.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, NoReturn, TypeVar, cast

import strawberry
import strawberry.federation
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.fastapi import GraphQLRouter
from strawberry.federation.schema_directives import Key
from strawberry.federation.types import FieldSet
from strawberry.types import Info

from doorward_kit.audit_client import AuditingReader, Outcome
from doorward_kit.auth import Principal
from doorward_kit.decisions import Reason, SpanName, decision_span, reason_of_error
from doorward_kit.errors import DoorwardError, ErrorCode, not_found
from doorward_kit.graphql import (
    Edge,
    GatewayGate,
    PageInfo,
    RequestContext,
    SubgraphSchema,
    caller,
    connection_page,
    decode_time_cursor,
    encode_time_cursor,
    page_size,
    schema_extensions,
    subgraph_router,
)
from doorward_kit.selection import Selected
from services.workorders import models
from services.workorders.api.request_unit import RequestTransaction, current_unit
from services.workorders.breakglass import BreakGlass, BreakGlassView
from services.workorders.breakglass import BreakGlassStatus as _BreakGlassStatus
from services.workorders.crypto import CiphertextRejected
from services.workorders.ports import GrantView, SecretRefView, UploadSlotView
from services.workorders.repository import CustomerRow, OrderRow, SiteRow
from services.workorders.retention import HoldTarget as _HoldTarget
from services.workorders.retention import Retention
from services.workorders.retention import RetentionPolicy as _RetentionPolicy
from services.workorders.retention import TraceRetentionBy as _TraceRetentionBy
from services.workorders.runtime import Runtime
from services.workorders.service import (
    Contact,
    Refusal,
    Unreadable,
    WindowPolicy,
    WorkOrderInput,
    source_ip,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

# Refusals that are audited as DENIED events.
_AUDITED_CODES = (ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.OUTSIDE_ACCESS_WINDOW)


@strawberry.enum
class WorkOrderStatus(enum.Enum):
    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    DISPATCHED = "DISPATCHED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


@strawberry.enum
class Priority(enum.Enum):
    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    URGENT = "URGENT"


@strawberry.enum
class SecretKind(enum.Enum):
    DOOR_CODE = "DOOR_CODE"
    ALARM_CODE = "ALARM_CODE"
    KEY_SAFE = "KEY_SAFE"
    GATE_CODE = "GATE_CODE"
    OTHER = "OTHER"


# ---- per-request plumbing ------------------------------------------------------------------


def _runtime(info: Info) -> Runtime:
    runtime: Runtime = info.context.services
    return runtime


def _reading() -> AbstractAsyncContextManager[AsyncSession]:
    """The request's ORM session (api/request_unit.py): every read of a request shares its
    connection, and what it adds commits before the answer leaves."""
    return current_unit().session()


def _raw_reading() -> AbstractAsyncContextManager[AuditingReader]:
    """The request's raw reader, for the board's reads (no ORM session): the same connection,
    and the audit events of what it reads are written before the answer leaves."""
    return current_unit().reader()


def _break_glass(info: Info) -> BreakGlass:
    return BreakGlass(_runtime(info).service)


def _retention(info: Info) -> Retention:
    return Retention(_runtime(info).service)


@dataclass(frozen=True)
class _Batched:
    """A per-request DataLoader: all keys asked for in one tick are fetched in one call.

    `load` and `many` hand back the loader's futures themselves, not coroutines around them:
    a resolver awaits them as before, and `many` gathers futures (no task per key: a board's
    address batch gathered 20 coroutines, each wrapped in a task, for sites already loaded)."""

    name: str
    fetch: Callable[[Runtime, Any, Principal, list[str]], Awaitable[dict[str, Any]]]
    default: Any = None
    # The fetch takes the request's raw reader (a service read that runs raw statements only:
    # the board's levels), not its ORM session.
    raw: bool = False

    def loader(self, info: Info) -> DataLoader[str, Any]:
        context: RequestContext = info.context
        runtime = _runtime(info)
        fetch, default = self.fetch, self.default
        reading = _raw_reading if self.raw else _reading

        async def batch(keys: list[str]) -> list[Any]:
            principal = await context.principal()
            source_ip.set(context.source_ip)  # the batch runs in its own task
            async with reading() as session:
                found = await fetch(runtime, session, principal, keys)
            return [found.get(k, default() if callable(default) else default) for k in keys]

        return context.loader(self.name, batch)

    def __call__(self, info: Info, key: str) -> Awaitable[Any]:
        return self.loader(info).load(key)

    def many(self, info: Info, keys: list[str]) -> Awaitable[list[Any]]:
        return self.loader(info).load_many(keys)


def _batched(
    name: str,
    fetch: Callable[[Runtime, Any, Principal, list[str]], Awaitable[dict[str, Any]]],
    default: Any = None,
    *,
    raw: bool = False,
) -> _Batched:
    return _Batched(name, fetch, default, raw)


def _service_fetch(
    method: str,
) -> Callable[[Runtime, Any, Principal, list[str]], Awaitable[Any]]:
    async def fetch(runtime: Runtime, session: Any, principal: Principal, keys: list[str]) -> Any:
        return await getattr(runtime.service, method)(session, principal, keys)

    return fetch


def _secret_ref_loader(info: Info) -> DataLoader[str, SecretRefView | None]:
    """Secret references' kind and label are the secrets service's: one GetSecretRefs per
    batch, outside the request's session (a gRPC call holds no database connection)."""
    context: RequestContext = info.context
    runtime = _runtime(info)

    async def batch(keys: list[str]) -> list[SecretRefView | None]:
        principal = await context.principal()
        found = await runtime.service.secret_refs(principal.org_id, keys)
        return [found.get(k) for k in keys]

    return context.loader("secret_refs", batch)


def _load_secret_ref(info: Info, key: str) -> Awaitable[SecretRefView | None]:
    return _secret_ref_loader(info).load(key)


async def _customer_sites_fetch(
    runtime: Runtime, session: AsyncSession, principal: Principal, keys: list[str]
) -> dict[str, list[SiteRow]]:
    rows = await runtime.service.sites_of_customers(session, principal, keys)
    result: dict[str, list[SiteRow]] = {k: [] for k in keys}
    for row in rows:
        result[row.customer_id].append(row)
    return result


load_order = _batched("orders", _service_fetch("visible_orders"))
load_requested_order = _batched("requested_orders", _service_fetch("requested_orders"))
load_site = _batched("sites", _service_fetch("visible_sites"), raw=True)


def load_sites(info: Info, keys: list[str]) -> Awaitable[list[SiteRow | None]]:
    return load_site.many(info, keys)


load_customer = _batched("customers", _service_fetch("visible_customers"))
load_contact = _batched("contacts", _service_fetch("read_contacts"))


def _address_loader(info: Info) -> DataLoader[str, str | Unreadable | None]:
    """Sites' addresses: the sites come from the request's site loader (already read, and
    found visible, when the caller got to the Site), so only their customers are read. Every
    read of an address in a request goes through this one loader (the board's page too), so a
    site's address is read, and its read audited, once per request whoever asks first."""
    context: RequestContext = info.context
    runtime = _runtime(info)

    async def batch(keys: list[str]) -> list[str | Unreadable | None]:
        # Before taking the session: the site loader may need it for sites not loaded yet.
        sites = [s for s in await load_sites(info, keys) if s is not None]
        principal = await context.principal()
        source_ip.set(context.source_ip)  # the batch runs in its own task
        async with _raw_reading() as reader:
            found = await runtime.service.read_site_addresses(reader, principal, sites)
        return [found.get(k) for k in keys]

    return context.loader("addresses", batch)


def load_address(info: Info, key: str) -> Awaitable[str | Unreadable | None]:
    return _address_loader(info).load(key)


load_invoice = _batched("invoice", _service_fetch("invoice_lines"), list)
load_notes = _batched("notes", _service_fetch("notes"), list)
load_order_secrets = _batched(
    "order_secrets", _service_fetch("secret_ids_of_orders"), list, raw=True
)
load_site_secrets = _batched("site_secrets", _service_fetch("secret_ids_of_sites"), list)
load_secret_ref = _load_secret_ref
load_customer_sites = _batched("customer_sites", _customer_sites_fetch, list)


async def _mutate(
    info: Info,
    action: str,
    run: Callable[[AsyncSession, Principal], Awaitable[T]],
    *,
    target_type: str = "",
    target_id: str = "",
    work_order_id: str = "",
    secret_ref_id: str = "",
    denied_action: str | None = None,
) -> T:
    """Run one change in one transaction; a refusal is audited (DENIED) in a new one.

    Every change is an access decision: one `doorward.access.decide` span (its action, the
    caller's pseudonym, the job and secret ids) that says allow or deny and why, and names the
    audit event of either outcome (doorward_kit.decisions)."""
    principal = await caller(info)
    runtime = _runtime(info)
    source_ip.set(info.context.source_ip)
    with decision_span(
        SpanName.ACCESS_DECIDE,
        org_id=principal.org_id,
        actor_id=principal.user_id,
        action=action,
        work_order_id=_audit_id(work_order_id),
        secret_ref_id=_audit_id(secret_ref_id),
    ) as decision:
        try:
            async with runtime.db.unit_of_work() as session:
                result = await run(session, principal)
            runtime.wake_revoker()
            decision.allow(_ALLOW_REASONS.get(action, Reason.POLICY))
            return result
        except DoorwardError as error:
            if isinstance(error, Refusal) or error.code in _AUDITED_CODES:
                decision.deny(reason_of_error(error))
                reason = error.reason if isinstance(error, Refusal) else error.code.value.lower()
                async with runtime.db.unit_of_work() as session:
                    await runtime.service.audit(
                        session,
                        principal,
                        denied_action or action,
                        outcome=Outcome.DENIED,
                        target_type=target_type,
                        target_id=_audit_id(target_id),
                        work_order_id=_audit_id(work_order_id),
                        secret_ref_id=_audit_id(secret_ref_id),
                        details={"reason": reason, "code": error.code.value},
                    )
            raise


# Why an allowed change was allowed, where it is more than "the policy table says so".
_ALLOW_REASONS = {
    "secret.access.request": Reason.IN_WINDOW,
    "secret.break_glass.request": Reason.BREAK_GLASS,
    "secret.break_glass.approve": Reason.BREAK_GLASS,
}


def _id(value: strawberry.ID | str) -> str:
    return str(value)


def _audit_id(value: str) -> str:
    """Only real ids reach a refusal event: a junk or phone-like id from a caller would fail the
    audit allow-list and turn a clean refusal into an internal error."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return ""


# ---- one batch per level for a list's rows ------------------------------------------------
#
# A list of N work orders used to resolve `site`, `site.address` and `secretRefs` through an
# async resolver per row: N coroutines per field, each a task in graphql-core's gather, each
# awaiting its DataLoader future and strawberry's await_maybe (about a third of workorders'
# execution CPU on the board). The list resolvers a board uses load the levels the operation
# selects in one batch each, with the same calls and keys, and hand every row its values; the
# rows' fields are sync and return them. A row nobody prefetched for (`_entities`, a single
# `workOrder`, `Customer.sites`) loads per field as before: its sync resolver returns the
# loading awaitable, which graphql-core awaits.

# "Not loaded for this row": the field loads its value itself.
_LOAD: Any = object()


def _later(awaitable: Awaitable[T]) -> T:
    """A sync resolver's answer when its value was not loaded in advance: the awaitable that
    loads it (graphql-core awaits whatever awaitable a resolver returns). Typed as the value:
    strawberry reads the resolver's annotation as the field's GraphQL type."""
    return cast(T, awaitable)


class _Failed:
    """A prefetched level's failure, raised by each row's field as a loader's future raises
    it: the same exception, with the traceback of where it happened."""

    __slots__ = ("error", "traceback")

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.traceback = error.__traceback__

    def raise_(self) -> NoReturn:
        raise self.error.with_traceback(self.traceback)


def _readable(value: str | Unreadable | None) -> str | None:
    if isinstance(value, Unreadable):
        # Already audited by the service; this field errors, no other field's data is touched.
        raise CiphertextRejected()
    return value


async def _prefetch(info: Info, orders: list[WorkOrder], node: Selected | None) -> None:
    """Load what `node` (the orders' field in the operation) selects of `site`,
    `site.address` and `secretRefs`, one batch per level, and give each order its values.

    With the keys the rows' own fields would have asked for, in the same order: the same
    statements, the same GetSecretRefs call, the same contact reads and audit events (an
    address only when the operation selects it: see selection.py). Sites and addresses go
    through the request's loaders, so a site's address is read once per request whichever
    field asks first, and a failed batch is left to the rows: the loaders hold the failure,
    and each row's field raises it exactly as before. Secret ids and references are two
    direct calls (`_prefetch_refs`)."""
    if node is None or not orders:
        return
    site = node.field("site")
    steps = []
    if site is not None:
        steps.append(_prefetch_sites(info, orders, with_address=site.asks("address")))
    if node.asks("secretRefs"):
        steps.append(_prefetch_refs(info, orders))
    if len(steps) == 1:
        await steps[0]
    elif steps:
        # Two chains, as two levels of fields ran before: sites then addresses on the request's
        # session, secret ids on it too, then GetSecretRefs (no session) beside the addresses.
        await asyncio.gather(*steps)


async def _prefetch_sites(info: Info, orders: list[WorkOrder], *, with_address: bool) -> None:
    ids = list(dict.fromkeys(o.site_id for o in orders))
    try:
        rows = await load_sites(info, ids)
    except Exception:
        return  # kept by the site loader: each row's `site` raises it (above)
    sites = {i: Site.from_row(r) for i, r in zip(ids, rows, strict=True) if r is not None}
    if with_address and sites:
        keys = list(sites)
        try:
            values = await _address_loader(info).load_many(keys)
        except Exception:
            values = None  # kept by the address loader: each row's `address` raises it
        if values is not None:
            for key, value in zip(keys, values, strict=True):
                sites[key].prefetched_address = value
    for order in orders:
        order.prefetched_site = sites.get(order.site_id)


async def _prefetch_refs(info: Info, orders: list[WorkOrder]) -> None:
    """The orders' secret ids, then their references from secrets: the same two calls the
    loaders made, called directly (no reads to deduplicate or audit here, and a board's 60
    loader futures were a third of the field's cost). A failed call fails the field of the
    rows it was for, as the loaders' failure did: an order without references still has []."""
    runtime = _runtime(info)
    principal = await caller(info)
    try:
        async with _raw_reading() as reader:  # a raw read: no ORM session on a board
            by_order = await runtime.service.secret_ids_of_orders(
                reader, principal, [o.id for o in orders]
            )
    except Exception as error:
        failed = _Failed(error)
        for order in orders:
            order.prefetched_refs = failed
        return
    id_lists = [by_order.get(o.id, []) for o in orders]
    wanted = list(dict.fromkeys(i for ids in id_lists for i in ids))
    refs: dict[str, SecretRef] | _Failed = {}
    if wanted:
        try:
            views = await runtime.service.secret_refs(principal.org_id, wanted)
            refs = {i: SecretRef.from_view(v) for i in wanted if (v := views.get(i)) is not None}
        except Exception as error:
            refs = _Failed(error)
    for order, ids in zip(orders, id_lists, strict=True):
        if isinstance(refs, _Failed):
            order.prefetched_refs = refs if ids else []
        else:
            order.prefetched_refs = [refs[i] for i in ids if i in refs]


def _page_nodes(info: Info) -> Selected | None:
    """The `edges.node` of a connection field, as the operation selects it."""
    page = Selected.of(info)
    edges = page.field("edges") if page is not None else None
    return edges.field("node") if edges is not None else None


# ---- federated stubs ----------------------------------------------------------------------


@strawberry.federation.type(keys=[Key(fields=FieldSet("id"), resolvable=False)])
class Region:
    id: strawberry.ID


@strawberry.federation.type(keys=["id"])
class User:
    """identity's User, extended with the jobs assigned to them."""

    id: strawberry.ID

    @strawberry.field
    async def assigned_work_orders(
        self,
        info: Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
    ) -> list[WorkOrder]:
        principal = await caller(info)
        runtime = _runtime(info)
        async with _reading() as session:
            rows = await runtime.service.assigned_work_orders(
                session, principal, str(self.id), from_, to
            )
        return [WorkOrder.from_row(r) for r in rows]

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> User:
        await caller(info)
        return cls(id=id)


# ---- types --------------------------------------------------------------------------------


@strawberry.type
class SecretRef:
    """A reference only: no type anywhere in the graph carries a secret's value."""

    id: strawberry.ID
    kind: SecretKind
    label: str
    version: int
    updated_at: datetime | None

    @classmethod
    def from_view(cls, view: SecretRefView) -> SecretRef:
        try:
            kind = SecretKind(view.kind)
        except ValueError:
            kind = SecretKind.OTHER
        return cls(
            id=strawberry.ID(view.id),
            kind=kind,
            label=view.label,
            version=view.version,
            updated_at=view.updated_at,
        )


async def _refs(info: Info, ids: list[str]) -> list[SecretRef]:
    # All of them in the same batch: awaited one by one, an order's second reference went to
    # secrets in a second GetSecretRefs, its third in a third.
    views = await _secret_ref_loader(info).load_many(ids) if ids else []
    return [SecretRef.from_view(v) for v in views if v is not None]


@strawberry.type
class Customer:
    id: strawberry.ID
    region_id: strawberry.Private[str]
    erased_at: strawberry.Private[datetime | None]
    restricted: bool = strawberry.field(
        description="GDPR Art. 18: processing restricted; contact data is not read and no job "
        "is created, assigned or dispatched for the customer."
    )

    @classmethod
    def from_row(cls, row: models.Customer | CustomerRow) -> Customer:
        return cls(
            id=strawberry.ID(row.id),
            region_id=row.region_id,
            erased_at=row.erased_at,
            restricted=row.restricted,
        )

    async def _contact(self, info: Info) -> Contact | None:
        contact: Contact | None = await load_contact(info, str(self.id))
        if contact is not None and contact.unreadable:
            # Already audited by the service; the field errors, no other field's data shows.
            raise CiphertextRejected()
        return contact

    @strawberry.field(description="Personal data: null when erased or not for this caller.")
    async def name(self, info: Info) -> str | None:
        contact = await self._contact(info)
        return contact.name if contact else None

    @strawberry.field(description="Personal data: null for subcontractors and when erased.")
    async def phone(self, info: Info) -> str | None:
        contact = await self._contact(info)
        return contact.phone if contact else None

    @strawberry.field(description="Personal data: null for subcontractors and when erased.")
    async def email(self, info: Info) -> str | None:
        contact = await self._contact(info)
        return contact.email if contact else None

    @strawberry.field
    def erased(self) -> bool:
        return self.erased_at is not None

    @strawberry.field
    def region(self) -> Region:
        return Region(id=strawberry.ID(self.region_id))

    @strawberry.field
    async def sites(self, info: Info) -> list[Site]:
        rows: list[SiteRow] = await load_customer_sites(info, str(self.id))
        return [Site.from_row(r) for r in rows]


@strawberry.federation.type(keys=["id"])
class Site:
    id: strawberry.ID
    customer_id: strawberry.Private[str]
    region_id: strawberry.Private[str]
    # What the request's address loader answered for this site, when a list resolver loaded
    # it for its rows (`_prefetch`); _LOAD: `address` loads it itself.
    prefetched_address: strawberry.Private[Any] = _LOAD

    @classmethod
    def from_row(cls, row: models.Site | SiteRow) -> Site:
        return cls(id=strawberry.ID(row.id), customer_id=row.customer_id, region_id=row.region_id)

    @strawberry.field
    async def customer(self, info: Info) -> Customer | None:
        row = await load_customer(info, self.customer_id)
        return Customer.from_row(row) if row else None

    @strawberry.field(description="Personal data: null when erased or not for this caller.")
    def address(self, info: Info) -> str | None:
        value = self.prefetched_address
        if value is _LOAD:
            return _later(self._load_address(info))
        return _readable(value)

    async def _load_address(self, info: Info) -> str | None:
        return _readable(await load_address(info, str(self.id)))

    @strawberry.field
    def region(self) -> Region:
        return Region(id=strawberry.ID(self.region_id))

    @strawberry.field
    async def secrets(self, info: Info) -> list[SecretRef]:
        return await _refs(info, await load_site_secrets(info, str(self.id)))

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> Site | None:
        await caller(info)
        row = await load_site(info, str(id))
        return cls.from_row(row) if row else None


@strawberry.type
class InvoiceLine:
    id: strawberry.ID
    description: str
    quantity: str = strawberry.field(description='Decimal as a string, e.g. "1.5".')
    unit_price: str = strawberry.field(description='Decimal as a string, e.g. "89.90".')
    total: str

    @classmethod
    def from_row(cls, row: models.InvoiceLine) -> InvoiceLine:
        return cls(
            id=strawberry.ID(row.id),
            description=row.description,
            quantity=str(row.quantity.normalize()),
            unit_price=f"{row.unit_price:.2f}",
            total=f"{(row.quantity * row.unit_price).quantize(row.unit_price):.2f}",
        )


@strawberry.type
class WorkNote:
    id: strawberry.ID
    text: str
    created_at: datetime
    author_id: strawberry.Private[str]

    @strawberry.field
    def author(self) -> User:
        return User(id=strawberry.ID(self.author_id))


@strawberry.federation.type(keys=["id"])
class WorkOrder:
    id: strawberry.ID
    number: int
    title: str
    description: str
    status: WorkOrderStatus
    priority: Priority
    scheduled_start: datetime | None
    scheduled_end: datetime | None
    created_at: datetime
    completed_at: datetime | None
    site_id: strawberry.Private[str]
    region_id: strawberry.Private[str]
    assignee_id: strawberry.Private[str | None]
    cursor_key: strawberry.Private[tuple[datetime, str]]
    # The order's Site (or None) and SecretRef list, when a list resolver loaded them for its
    # rows (`_prefetch`); _LOAD: the field loads them itself.
    prefetched_site: strawberry.Private[Any] = _LOAD
    prefetched_refs: strawberry.Private[Any] = _LOAD

    @classmethod
    def from_row(cls, row: models.WorkOrder | OrderRow) -> WorkOrder:
        return cls(
            id=strawberry.ID(row.id),
            number=row.number,
            title=row.title,
            description=row.description,
            status=WorkOrderStatus(row.status),
            priority=Priority(row.priority),
            scheduled_start=row.scheduled_start,
            scheduled_end=row.scheduled_end,
            created_at=row.created_at,
            completed_at=row.completed_at,
            site_id=row.site_id,
            region_id=row.region_id,
            assignee_id=row.assignee_id,
            cursor_key=(row.created_at, row.id),
        )

    @strawberry.field
    def site(self, info: Info) -> Site | None:
        site = self.prefetched_site
        return _later(self._load_site(info)) if site is _LOAD else cast(Site | None, site)

    async def _load_site(self, info: Info) -> Site | None:
        row = await load_site(info, self.site_id)
        return Site.from_row(row) if row else None

    @strawberry.field
    def region(self) -> Region:
        return Region(id=strawberry.ID(self.region_id))

    @strawberry.field
    def assignee(self) -> User | None:
        return User(id=strawberry.ID(self.assignee_id)) if self.assignee_id else None

    @strawberry.field
    def secret_refs(self, info: Info) -> list[SecretRef]:
        refs = self.prefetched_refs
        if refs is _LOAD:
            return _later(self._load_refs(info))
        if isinstance(refs, _Failed):
            refs.raise_()
        return cast(list[SecretRef], refs)

    async def _load_refs(self, info: Info) -> list[SecretRef]:
        return await _refs(info, await load_order_secrets(info, str(self.id)))

    @strawberry.field(description="Editable by DISPATCHER and ADMIN only.")
    async def invoice_lines(self, info: Info) -> list[InvoiceLine]:
        rows: list[models.InvoiceLine] = await load_invoice(info, str(self.id))
        return [InvoiceLine.from_row(r) for r in rows]

    @strawberry.field
    async def work_notes(self, info: Info) -> list[WorkNote]:
        rows: list[models.WorkNote] = await load_notes(info, str(self.id))
        return [
            WorkNote(
                id=strawberry.ID(r.id), text=r.text, created_at=r.created_at, author_id=r.author_id
            )
            for r in rows
        ]

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> WorkOrder | None:
        await caller(info)
        row = await load_order(info, str(id))
        return cls.from_row(row) if row else None


@strawberry.type
class WorkOrderConnection:
    edges: list[Edge[WorkOrder]]
    page_info: PageInfo


@strawberry.type
class CustomerConnection:
    edges: list[Edge[Customer]]
    page_info: PageInfo


@strawberry.type
class SecretUpload:
    secret_ref: SecretRef
    upload_url: str
    upload_token: str
    expires_at: datetime | None

    @classmethod
    def from_view(cls, view: UploadSlotView) -> SecretUpload:
        return cls(
            secret_ref=SecretRef.from_view(view.secret_ref),
            upload_url=view.upload_url,
            upload_token=view.upload_token,
            expires_at=view.expires_at,
        )


@strawberry.type
class SecretAccessGrant:
    id: strawberry.ID
    secret_ref: SecretRef
    expires_at: datetime | None
    reveal_url: str
    reveal_token: str
    work_order_id: strawberry.Private[str]

    @strawberry.field
    async def work_order(self, info: Info) -> WorkOrder | None:
        row = await load_order(info, self.work_order_id)
        return WorkOrder.from_row(row) if row else None

    @classmethod
    def from_view(cls, view: GrantView) -> SecretAccessGrant:
        return cls(
            id=strawberry.ID(view.id),
            secret_ref=SecretRef.from_view(view.secret_ref),
            expires_at=view.expires_at,
            reveal_url=view.reveal_url,
            reveal_token=view.reveal_token,
            work_order_id=view.work_order_id,
        )


@strawberry.enum
class BreakGlassStatus(enum.Enum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"


@strawberry.type
class BreakGlassPolicy:
    require_second_approver: bool


@strawberry.type
class BreakGlassRequest:
    id: strawberry.ID
    status: BreakGlassStatus
    reason: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    requester_id: strawberry.Private[str]
    approver_id: strawberry.Private[str | None]
    secret_ref_id: strawberry.Private[str]
    work_order_id: strawberry.Private[str]
    issued: strawberry.Private[GrantView | None]
    claimable: strawberry.Private[bool]

    @classmethod
    def from_view(cls, view: BreakGlassView) -> BreakGlassRequest:
        row = view.row
        return cls(
            id=strawberry.ID(row.id),
            status=BreakGlassStatus(view.status.value),
            reason=row.reason,
            created_at=row.created_at,
            expires_at=row.expires_at,
            decided_at=row.decided_at,
            requester_id=row.requester_id,
            approver_id=row.approver_id,
            secret_ref_id=row.secret_ref_id,
            work_order_id=row.work_order_id,
            issued=view.grant,
            claimable=view.claimable,
        )

    @strawberry.field
    def requester(self) -> User:
        return User(id=strawberry.ID(self.requester_id))

    @strawberry.field
    def approver(self) -> User | None:
        return User(id=strawberry.ID(self.approver_id)) if self.approver_id else None

    @strawberry.field
    async def secret_ref(self, info: Info) -> SecretRef | None:
        view = await load_secret_ref(info, self.secret_ref_id)
        return SecretRef.from_view(view) if view else None

    @strawberry.field
    async def work_order(self, info: Info) -> WorkOrder | None:
        row = await load_order(info, self.work_order_id)
        return WorkOrder.from_row(row) if row else None

    @strawberry.field(
        description="Present once approved, for the requester only, and only once: the "
        "reveal token is shown a single time."
    )
    async def grant(self, info: Info) -> SecretAccessGrant | None:
        if self.issued is not None:
            return SecretAccessGrant.from_view(self.issued)
        if not self.claimable:
            return None
        principal = await caller(info)
        if principal.user_id != self.requester_id:
            return None
        runtime = _runtime(info)
        source_ip.set(info.context.source_ip)
        async with runtime.db.unit_of_work() as session:
            view = await _break_glass(info).claim(session, principal, str(self.id))
        if view is None:
            return None
        self.issued, self.claimable = view, False
        return SecretAccessGrant.from_view(view)


@strawberry.enum
class HoldTarget(enum.Enum):
    CUSTOMER = "CUSTOMER"
    SITE = "SITE"
    WORK_ORDER = "WORK_ORDER"


@strawberry.type(
    description="A legal hold: nothing it covers is deleted (by the retention purge or an "
    "erasure) while it is active. A customer's hold covers its sites and work orders; a hold on "
    "a site or work order also keeps the customer's contact data."
)
class LegalHold:
    id: strawberry.ID
    target_type: HoldTarget
    target_id: strawberry.ID
    reason: str
    placed_at: datetime
    released_at: datetime | None
    release_reason: str | None
    placed_by_id: strawberry.Private[str]
    released_by_id: strawberry.Private[str | None]

    @classmethod
    def from_row(cls, row: models.LegalHold) -> LegalHold:
        return cls(
            id=strawberry.ID(row.id),
            target_type=HoldTarget(row.target_type),
            target_id=strawberry.ID(row.target_id),
            reason=row.reason,
            placed_at=row.placed_at,
            released_at=row.released_at,
            release_reason=row.release_reason,
            placed_by_id=row.placed_by,
            released_by_id=row.released_by,
        )

    @strawberry.field
    def active(self) -> bool:
        return self.released_at is None

    @strawberry.field
    def placed_by(self) -> User:
        return User(id=strawberry.ID(self.placed_by_id))

    @strawberry.field
    def released_by(self) -> User | None:
        return User(id=strawberry.ID(self.released_by_id)) if self.released_by_id else None


# The domain's enum, registered as the GraphQL enum of the same name (one definition).
strawberry.enum(
    _TraceRetentionBy,
    description="Who deletes traces after traceDays: the embedded trace store (TRACE_STORE), "
    "or, when spans go to an external OpenTelemetry collector, the operator's own backend "
    "(EXTERNAL_BACKEND: Doorward deletes nothing there; set the backend's retention yourself).",
)


@strawberry.type(
    description="How long each category of data is kept, in days. Work orders (with their "
    "invoice lines) count from completion or cancellation; contact data from the customer's "
    "last job; audit events at least 183 days."
)
class RetentionPolicy:
    work_order_days: int
    contact_data_days: int
    site_secret_days: int
    grant_days: int
    audit_event_days: int
    trace_days: int
    trace_retention_by: _TraceRetentionBy = strawberry.field(
        description="Who enforces traceDays. The embedded trace store keeps an organisation's "
        "traces for traceDays but never longer than its own DOORWARD_TRACES_RETENTION_DAYS."
    )

    @classmethod
    def of(cls, policy: _RetentionPolicy, by: _TraceRetentionBy) -> RetentionPolicy:
        return cls(
            work_order_days=policy.work_order_days,
            contact_data_days=policy.contact_data_days,
            site_secret_days=policy.site_secret_days,
            grant_days=policy.grant_days,
            audit_event_days=policy.audit_event_days,
            trace_days=policy.trace_days,
            trace_retention_by=by,
        )


@strawberry.input(description="Omitted fields keep their value.")
class RetentionPolicyInput:
    work_order_days: int | None = None
    contact_data_days: int | None = None
    site_secret_days: int | None = None
    grant_days: int | None = None
    audit_event_days: int | None = None
    trace_days: int | None = None


@strawberry.type
class AccessWindowPolicy:
    lead_minutes: int
    grace_minutes: int
    max_window_hours: float
    timezone: str

    @classmethod
    def from_policy(cls, policy: WindowPolicy) -> AccessWindowPolicy:
        return cls(
            lead_minutes=int(policy.lead.total_seconds() // 60),
            grace_minutes=int(policy.grace.total_seconds() // 60),
            max_window_hours=policy.max_window.total_seconds() / 3600,
            timezone=policy.timezone,
        )


# ---- inputs -------------------------------------------------------------------------------


@strawberry.input
class CreateCustomerInput:
    name: str
    phone: str = ""
    email: str = ""
    region_id: strawberry.ID


@strawberry.input
class CreateSiteInput:
    customer_id: strawberry.ID
    address: str
    region_id: strawberry.ID


@strawberry.input
class CreateWorkOrderInput:
    site_id: strawberry.ID
    title: str
    description: str = ""
    priority: Priority = Priority.NORMAL
    scheduled_start: datetime | None = None
    scheduled_end: datetime | None = None


@strawberry.input
class UpdateWorkOrderInput:
    title: str | None = None
    description: str | None = None
    priority: Priority | None = None
    scheduled_start: datetime | None = None
    scheduled_end: datetime | None = None


@strawberry.input
class InvoiceLineInput:
    description: str
    quantity: str
    unit_price: str


@strawberry.input
class AccessWindowPolicyInput:
    lead_minutes: int | None = None
    grace_minutes: int | None = None
    max_window_hours: float | None = None
    timezone: str | None = None


def _cursor(row: models.WorkOrder | models.Customer | OrderRow) -> str:
    return encode_time_cursor(row.created_at, row.id)


# ---- queries ------------------------------------------------------------------------------


@strawberry.type
class Query:
    @strawberry.field
    async def work_order(self, info: Info, id: strawberry.ID) -> WorkOrder | None:
        await caller(info)
        row = await load_requested_order(info, _id(id))
        if row is None:
            raise not_found("work order")
        return WorkOrder.from_row(row)

    @strawberry.field
    async def work_orders(
        self,
        info: Info,
        status: WorkOrderStatus | None = None,
        region_id: strawberry.ID | None = None,
        assignee_id: strawberry.ID | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> WorkOrderConnection:
        principal = await caller(info)
        runtime = _runtime(info)
        size = page_size(first)
        async with _raw_reading() as reader:
            rows = await runtime.service.list_work_orders(
                reader,
                principal,
                status=status.value if status else None,
                region_id=_id(region_id) if region_id is not None else None,
                assignee_id=_id(assignee_id) if assignee_id is not None else None,
                start_from=from_,
                start_to=to,
                after=decode_time_cursor(after),
                limit=size + 1,
            )
        edges, page_info = connection_page(rows, size, _cursor, WorkOrder.from_row)
        await _prefetch(info, [e.node for e in edges], _page_nodes(info))
        return WorkOrderConnection(edges=edges, page_info=page_info)

    @strawberry.field(
        description="The signed-in technician's jobs whose window touches the day, in the "
        "organisation's time zone (UTC unless set); today when no date is given."
    )
    async def my_jobs(self, info: Info, date: date | None = None) -> list[WorkOrder]:
        principal = await caller(info)
        runtime = _runtime(info)
        async with _reading() as session:
            rows = await runtime.service.my_jobs(session, principal, date)
        orders = [WorkOrder.from_row(r) for r in rows]
        await _prefetch(info, orders, Selected.of(info))
        return orders

    @strawberry.field
    async def customer(self, info: Info, id: strawberry.ID) -> Customer | None:
        await caller(info)
        row = await load_customer(info, _id(id))
        if row is None:
            raise not_found("customer")
        return Customer.from_row(row)

    @strawberry.field
    async def customers(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> CustomerConnection:
        principal = await caller(info)
        runtime = _runtime(info)
        size = page_size(first)
        async with _reading() as session:
            rows = await runtime.service.list_customers(
                session, principal, decode_time_cursor(after), size + 1
            )
        edges, page_info = connection_page(rows, size, _cursor, Customer.from_row)
        return CustomerConnection(edges=edges, page_info=page_info)

    @strawberry.field
    async def site(self, info: Info, id: strawberry.ID) -> Site | None:
        await caller(info)
        row = await load_site(info, _id(id))
        if row is None:
            raise not_found("site")
        return Site.from_row(row)

    @strawberry.field(description="ADMIN only: the organisation's break-glass requests.")
    async def break_glass_requests(
        self, info: Info, status: BreakGlassStatus | None = None
    ) -> list[BreakGlassRequest]:
        principal = await caller(info)
        async with _reading() as session:
            views = await _break_glass(info).requests(
                session, principal, _BreakGlassStatus(status.value) if status else None
            )
        return [BreakGlassRequest.from_view(v) for v in views]

    @strawberry.field(description="ADMIN only: the organisation's break-glass policy.")
    async def break_glass_policy(self, info: Info) -> BreakGlassPolicy:
        principal = await caller(info)
        async with _reading() as session:
            value = await _break_glass(info).policy(session, principal)
        return BreakGlassPolicy(require_second_approver=value)

    @strawberry.field
    async def access_window_policy(self, info: Info) -> AccessWindowPolicy:
        principal = await caller(info)
        runtime = _runtime(info)
        async with _reading() as session:
            policy = await runtime.service.get_window_policy(session, principal)
        return AccessWindowPolicy.from_policy(policy)

    @strawberry.field(description="ADMIN only: how long the organisation keeps each category.")
    async def retention_policy(self, info: Info) -> RetentionPolicy:
        principal = await caller(info)
        async with _reading() as session:
            policy = await _retention(info).policy(session, principal)
        return RetentionPolicy.of(policy, _runtime(info).trace_retention_by)

    @strawberry.field(description="ADMIN only: the organisation's legal holds, newest first.")
    async def legal_holds(self, info: Info) -> list[LegalHold]:
        principal = await caller(info)
        async with _reading() as session:
            rows = await _retention(info).holds(session, principal)
        return [LegalHold.from_row(r) for r in rows]


# ---- mutations ----------------------------------------------------------------------------


def _order_input(
    data: CreateWorkOrderInput | UpdateWorkOrderInput,
) -> WorkOrderInput:
    return WorkOrderInput(
        title=data.title,
        description=data.description,
        priority=data.priority.value if data.priority is not None else None,
        scheduled_start=data.scheduled_start,
        scheduled_end=data.scheduled_end,
    )


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_customer(self, info: Info, input: CreateCustomerInput) -> Customer:
        async def run(session: AsyncSession, principal: Principal) -> models.Customer:
            return await _runtime(info).service.create_customer(
                session,
                principal,
                name=input.name,
                phone=input.phone,
                email=input.email,
                region_id=_id(input.region_id),
            )

        return Customer.from_row(
            await _mutate(info, "customer.create", run, target_type="Customer")
        )

    @strawberry.mutation
    async def create_site(self, info: Info, input: CreateSiteInput) -> Site:
        async def run(session: AsyncSession, principal: Principal) -> models.Site:
            return await _runtime(info).service.create_site(
                session,
                principal,
                customer_id=_id(input.customer_id),
                address=input.address,
                region_id=_id(input.region_id),
            )

        row = await _mutate(
            info, "site.create", run, target_type="Customer", target_id=_id(input.customer_id)
        )
        return Site.from_row(row)

    @strawberry.mutation
    async def create_work_order(self, info: Info, input: CreateWorkOrderInput) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.create_work_order(
                session, principal, _id(input.site_id), _order_input(input)
            )

        row = await _mutate(
            info, "workorder.create", run, target_type="Site", target_id=_id(input.site_id)
        )
        return WorkOrder.from_row(row)

    @strawberry.mutation
    async def update_work_order(
        self, info: Info, id: strawberry.ID, input: UpdateWorkOrderInput
    ) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.update_work_order(
                session, principal, _id(id), _order_input(input)
            )

        return await _order_change(info, "workorder.update", _id(id), run)

    @strawberry.mutation
    async def assign_work_order(
        self, info: Info, id: strawberry.ID, assignee_id: strawberry.ID
    ) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.assign(
                session, principal, _id(id), _id(assignee_id)
            )

        return await _order_change(info, "workorder.assign", _id(id), run)

    @strawberry.mutation
    async def dispatch_work_order(self, info: Info, id: strawberry.ID) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.dispatch(session, principal, _id(id))

        return await _order_change(info, "workorder.dispatch", _id(id), run)

    @strawberry.mutation
    async def start_work_order(self, info: Info, id: strawberry.ID) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.start(session, principal, _id(id))

        return await _order_change(info, "workorder.start", _id(id), run)

    @strawberry.mutation
    async def complete_work_order(self, info: Info, id: strawberry.ID) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.complete(session, principal, _id(id))

        return await _order_change(info, "workorder.complete", _id(id), run)

    @strawberry.mutation
    async def cancel_work_order(self, info: Info, id: strawberry.ID, reason: str) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.cancel(session, principal, _id(id), reason)

        return await _order_change(info, "workorder.cancel", _id(id), run)

    @strawberry.mutation
    async def add_invoice_line(
        self, info: Info, work_order_id: strawberry.ID, input: InvoiceLineInput
    ) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.add_invoice_line(
                session,
                principal,
                _id(work_order_id),
                input.description,
                input.quantity,
                input.unit_price,
            )

        return await _order_change(info, "workorder.invoice.add", _id(work_order_id), run)

    @strawberry.mutation
    async def remove_invoice_line(self, info: Info, id: strawberry.ID) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.remove_invoice_line(session, principal, _id(id))

        row = await _mutate(
            info, "workorder.invoice.remove", run, target_type="InvoiceLine", target_id=_id(id)
        )
        return WorkOrder.from_row(row)

    @strawberry.mutation
    async def add_work_note(self, info: Info, work_order_id: strawberry.ID, text: str) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.add_note(
                session, principal, _id(work_order_id), text
            )

        return await _order_change(info, "workorder.note.add", _id(work_order_id), run)

    @strawberry.mutation
    async def attach_secret(
        self, info: Info, work_order_id: strawberry.ID, secret_ref_id: strawberry.ID
    ) -> WorkOrder:
        async def run(session: AsyncSession, principal: Principal) -> models.WorkOrder:
            return await _runtime(info).service.attach_secret(
                session, principal, _id(work_order_id), _id(secret_ref_id)
            )

        row = await _mutate(
            info,
            "secret.attach",
            run,
            target_type="WorkOrder",
            target_id=_id(work_order_id),
            work_order_id=_id(work_order_id),
            secret_ref_id=_id(secret_ref_id),
        )
        return WorkOrder.from_row(row)

    @strawberry.mutation
    async def prepare_secret_upload(
        self, info: Info, site_id: strawberry.ID, kind: SecretKind, label: str
    ) -> SecretUpload:
        async def run(session: AsyncSession, principal: Principal) -> UploadSlotView:
            return await _runtime(info).service.prepare_upload(
                session, principal, _id(site_id), kind.value, label
            )

        slot = await _mutate(
            info, "secret.upload.prepare", run, target_type="Site", target_id=_id(site_id)
        )
        return SecretUpload.from_view(slot)

    @strawberry.mutation
    async def prepare_secret_rotation(
        self, info: Info, secret_ref_id: strawberry.ID
    ) -> SecretUpload:
        async def run(session: AsyncSession, principal: Principal) -> UploadSlotView:
            return await _runtime(info).service.prepare_rotation(
                session, principal, _id(secret_ref_id)
            )

        slot = await _mutate(
            info,
            "secret.rotation.prepare",
            run,
            target_type="SecretRef",
            target_id=_id(secret_ref_id),
            secret_ref_id=_id(secret_ref_id),
        )
        return SecretUpload.from_view(slot)

    @strawberry.mutation
    async def request_secret_access(
        self, info: Info, work_order_id: strawberry.ID, secret_ref_id: strawberry.ID
    ) -> SecretAccessGrant:
        async def run(session: AsyncSession, principal: Principal) -> GrantView:
            return await _runtime(info).service.request_access(
                session, principal, _id(work_order_id), _id(secret_ref_id)
            )

        grant = await _mutate(
            info,
            "secret.access.request",
            run,
            target_type="SecretRef",
            target_id=_id(secret_ref_id),
            work_order_id=_id(work_order_id),
            secret_ref_id=_id(secret_ref_id),
            denied_action="secret.access.denied",
        )
        return SecretAccessGrant.from_view(grant)

    @strawberry.mutation(
        description="ADMIN only: a reason and a fresh one-time code (otp) of the requester. "
        "APPROVED at once (with its grant) unless the organisation requires a second approver."
    )
    async def request_break_glass_access(
        self,
        info: Info,
        secret_ref_id: strawberry.ID,
        reason: str,
        otp: str,
        work_order_id: strawberry.ID | None = None,
    ) -> BreakGlassRequest:
        async def run(session: AsyncSession, principal: Principal) -> BreakGlassView:
            return await _break_glass(info).request(
                session,
                principal,
                _id(secret_ref_id),
                reason,
                otp,
                _id(work_order_id) if work_order_id is not None else None,
            )

        view = await _mutate(
            info,
            "secret.break_glass.request",
            run,
            target_type="SecretRef",
            target_id=_id(secret_ref_id),
            secret_ref_id=_id(secret_ref_id),
        )
        return BreakGlassRequest.from_view(view)

    @strawberry.mutation(
        description="ADMIN only, never the requester: approve a PENDING break-glass request "
        "with your own fresh one-time code."
    )
    async def approve_break_glass(
        self, info: Info, request_id: strawberry.ID, otp: str
    ) -> BreakGlassRequest:
        async def run(session: AsyncSession, principal: Principal) -> BreakGlassView:
            return await _break_glass(info).approve(session, principal, _id(request_id), otp)

        view = await _mutate(
            info,
            "secret.break_glass.approve",
            run,
            target_type="BreakGlassRequest",
            target_id=_id(request_id),
        )
        return BreakGlassRequest.from_view(view)

    @strawberry.mutation(description="ADMIN only: refuse (or withdraw) a PENDING request.")
    async def deny_break_glass(self, info: Info, request_id: strawberry.ID) -> BreakGlassRequest:
        async def run(session: AsyncSession, principal: Principal) -> BreakGlassView:
            return await _break_glass(info).deny(session, principal, _id(request_id))

        view = await _mutate(
            info,
            "secret.break_glass.deny",
            run,
            target_type="BreakGlassRequest",
            target_id=_id(request_id),
        )
        return BreakGlassRequest.from_view(view)

    @strawberry.mutation(
        description="ADMIN only: whether break-glass needs a second ADMIN's approval. "
        "Returns the new setting."
    )
    async def update_break_glass_policy(self, info: Info, require_second_approver: bool) -> bool:
        async def run(session: AsyncSession, principal: Principal) -> bool:
            return await _break_glass(info).update_policy(
                session, principal, require_second_approver
            )

        return await _mutate(info, "org.break_glass_policy.update", run, target_type="Organisation")

    @strawberry.mutation(description="ADMIN only. Organisation rules for access windows.")
    async def update_access_window_policy(
        self, info: Info, input: AccessWindowPolicyInput
    ) -> AccessWindowPolicy:
        async def run(session: AsyncSession, principal: Principal) -> WindowPolicy:
            return await _runtime(info).service.update_window_policy(
                session,
                principal,
                lead_minutes=input.lead_minutes,
                grace_minutes=input.grace_minutes,
                max_window_hours=input.max_window_hours,
                timezone=input.timezone,
            )

        policy = await _mutate(info, "org.access_window.update", run, target_type="Organisation")
        return AccessWindowPolicy.from_policy(policy)

    @strawberry.mutation(description="ADMIN only. Everything held about the customer, as JSON.")
    async def export_customer_data(self, info: Info, customer_id: strawberry.ID) -> str:
        async def run(session: AsyncSession, principal: Principal) -> str:
            return await _runtime(info).service.export_customer(
                session, principal, _id(customer_id)
            )

        return await _mutate(
            info, "customer.export", run, target_type="Customer", target_id=_id(customer_id)
        )

    @strawberry.mutation(description="ADMIN only. Destroys the customer's key: irreversible.")
    async def erase_customer(self, info: Info, customer_id: strawberry.ID, reason: str) -> Customer:
        async def run(session: AsyncSession, principal: Principal) -> models.Customer:
            return await _runtime(info).service.erase_customer(
                session, principal, _id(customer_id), reason
            )

        row = await _mutate(
            info, "customer.erase", run, target_type="Customer", target_id=_id(customer_id)
        )
        return Customer.from_row(row)

    @strawberry.mutation(
        description="ADMIN only. GDPR Art. 18: restrict the processing of a customer's data."
    )
    async def restrict_customer(
        self, info: Info, customer_id: strawberry.ID, reason: str
    ) -> Customer:
        return await _restriction(info, _id(customer_id), True, reason)

    @strawberry.mutation(description="ADMIN only. Lift a restriction of processing.")
    async def unrestrict_customer(
        self, info: Info, customer_id: strawberry.ID, reason: str
    ) -> Customer:
        return await _restriction(info, _id(customer_id), False, reason)

    @strawberry.mutation(description="ADMIN only. Omitted fields keep their value.")
    async def update_retention_policy(
        self, info: Info, input: RetentionPolicyInput
    ) -> RetentionPolicy:
        changes = {
            "work_order_days": input.work_order_days,
            "contact_data_days": input.contact_data_days,
            "site_secret_days": input.site_secret_days,
            "grant_days": input.grant_days,
            "audit_event_days": input.audit_event_days,
            "trace_days": input.trace_days,
        }

        async def run(session: AsyncSession, principal: Principal) -> _RetentionPolicy:
            return await _retention(info).update_policy(session, principal, changes)

        policy = await _mutate(info, "org.retention_policy.update", run, target_type="Organisation")
        return RetentionPolicy.of(policy, _runtime(info).trace_retention_by)

    @strawberry.mutation(description="ADMIN only. Suspend deletion of a customer, site or job.")
    async def place_legal_hold(
        self, info: Info, target_type: HoldTarget, target_id: strawberry.ID, reason: str
    ) -> LegalHold:
        async def run(session: AsyncSession, principal: Principal) -> models.LegalHold:
            return await _retention(info).place(
                session, principal, _HoldTarget(target_type.value), _id(target_id), reason
            )

        row = await _mutate(info, "legal_hold.place", run, target_type="LegalHold")
        return LegalHold.from_row(row)

    @strawberry.mutation(description="ADMIN only. Deletion resumes at the next purge.")
    async def release_legal_hold(self, info: Info, id: strawberry.ID, reason: str) -> LegalHold:
        async def run(session: AsyncSession, principal: Principal) -> models.LegalHold:
            return await _retention(info).release(session, principal, _id(id), reason)

        row = await _mutate(
            info, "legal_hold.release", run, target_type="LegalHold", target_id=_id(id)
        )
        return LegalHold.from_row(row)


async def _restriction(info: Info, customer_id: str, restricted: bool, reason: str) -> Customer:
    async def run(session: AsyncSession, principal: Principal) -> models.Customer:
        return await _runtime(info).service.set_restriction(
            session, principal, customer_id, restricted, reason
        )

    row = await _mutate(
        info,
        "customer.restrict" if restricted else "customer.unrestrict",
        run,
        target_type="Customer",
        target_id=customer_id,
    )
    return Customer.from_row(row)


async def _order_change(
    info: Info,
    action: str,
    work_order_id: str,
    run: Callable[[AsyncSession, Principal], Awaitable[models.WorkOrder]],
) -> WorkOrder:
    row = await _mutate(
        info,
        action,
        run,
        target_type="WorkOrder",
        target_id=work_order_id,
        work_order_id=work_order_id,
    )
    return WorkOrder.from_row(row)


def build_schema(*, serving: bool = False) -> strawberry.federation.Schema:
    """The subgraph's schema. `serving`: with the request's one database session
    (api/request_unit.py), which the resolvers need; without it, the schema only prints its
    SDL (synchronously, where no process runs: `doorward gateway schema`, the tests)."""
    extensions = [*schema_extensions(), RequestTransaction] if serving else schema_extensions()
    return SubgraphSchema(
        query=Query,
        mutation=Mutation,
        types=[User, Region, WorkOrder, Site],
        extensions=extensions,
    )


def build_router(
    runtime: Runtime, *, gate: GatewayGate, development: bool = False
) -> GraphQLRouter[Any, Any]:
    return subgraph_router(
        build_schema(serving=True),
        verifier=runtime.verifier,
        services=runtime,
        gate=gate,
        development=development,
    )
