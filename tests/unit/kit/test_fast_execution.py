"""The kit's short path for plain leaf fields (doorward_kit/execution.py) answers exactly as
graphql-core's own execution: the same data, in the same key order, and the same errors (message,
path, locations, extensions, order), for a corpus of operations and for generated ones.

Each operation runs twice, through FastExecutionContext and through strawberry's stock context,
against schemas built from the same types: a test schema with every shape the short path must
get right or leave alone (bad values of every leaf type, nulls, exceptions, awaitables,
permission classes, interfaces, lists with null items, aliases, fragments, directives), and the
real audit and workorders schemas with their services faked (the board and variations of it).
"""

from __future__ import annotations

import asyncio
import copy
import enum
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import strawberry
from hypothesis import HealthCheck, given, settings
from hypothesis_graphql import queries
from strawberry.extensions import SchemaExtension
from strawberry.permission import BasePermission
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.execution import FastExecutionContext, plain_fields
from services.workorders.service import Unreadable
from tests.fixtures import subgraph_fakes as fakes

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@strawberry.enum
class Colour(enum.Enum):
    RED = "RED"
    GREEN = "GREEN"
    BLUE = "BLUE"


@strawberry.enum
class Mode(enum.Enum):
    GOOD = "GOOD"
    NULLS = "NULLS"
    BAD_ENUM = "BAD_ENUM"
    BAD_INT = "BAD_INT"
    HUGE_INT = "HUGE_INT"
    BAD_FLOAT = "BAD_FLOAT"
    BAD_DATE = "BAD_DATE"
    MISSING = "MISSING"
    EXCEPTION = "EXCEPTION"
    RAISING = "RAISING"
    AWAITABLE = "AWAITABLE"
    ENUM_BY_VALUE = "ENUM_BY_VALUE"
    SUBCLASS_STR = "SUBCLASS_STR"
    BOOL_FROM_INT = "BOOL_FROM_INT"
    NULL_ITEM = "NULL_ITEM"


class Never(BasePermission):
    message = "not for you"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return False


class Always(BasePermission):
    message = "never shown"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return True


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Tagged(Named):
    tag: str


@strawberry.type
class Item:
    id: strawberry.ID
    name: str
    count: int
    ratio: float
    flag: bool
    colour: Colour
    at: datetime
    maybe: str | None
    maybe_colour: Colour | None
    guarded: str = strawberry.field(permission_classes=[Never])
    allowed: str = strawberry.field(permission_classes=[Always])
    renamed: str = strawberry.field(name="alsoKnownAs")
    tags: list[str]
    children: list[Item]
    nullable_children: list[Item | None] | None
    secret: strawberry.Private[str]

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    async def later(self) -> int:
        await asyncio.sleep(0)
        return self.count

    @strawberry.field
    def refused(self) -> str | None:
        raise DoorwardError(ErrorCode.FORBIDDEN, "no")

    @strawberry.field
    async def later_refused(self) -> str | None:
        await asyncio.sleep(0)
        raise DoorwardError(ErrorCode.FORBIDDEN, f"later no {self.count}")

    @strawberry.field
    async def later_child(self) -> Item | None:
        await asyncio.sleep(0)
        return _item(Mode.GOOD, self.count + 1, 0)

    @strawberry.field
    def echo(self, text: str = "x") -> str:
        return text


class _Raising:
    """An attribute read that fails, as a property of an ORM object might."""

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"cannot read {name}")


class _Later:
    """An awaitable attribute value (not a coroutine: one never awaited would warn)."""

    def __await__(self) -> Any:
        yield from asyncio.sleep(0).__await__()
        return "eventually"


def _item(mode: Mode, n: int, depth: int = 1) -> Any:
    good: dict[str, Any] = {
        "id": f"id-{n}",
        "name": f"item {n}",
        "count": n,
        "ratio": n / 3,
        "flag": n % 2 == 0,
        "colour": list(Colour)[n % 3],
        "at": AT,
        "maybe": None if n % 2 else f"maybe {n}",
        "maybe_colour": None if n % 2 else Colour.BLUE,
        "guarded": "hidden",
        "allowed": "shown",
        "renamed": f"aka {n}",
        "tags": ["a", "b"],
        "children": [_item(Mode.GOOD, n * 10 + k, depth - 1) for k in range(2)] if depth else [],
        "nullable_children": [_item(Mode.GOOD, 99, 0), None] if depth else None,
        "secret": "never",
    }
    if mode is Mode.GOOD or (n % 3 == 0 and mode is not Mode.NULL_ITEM):
        return Item(**good)
    bad = dict(good)
    if mode is Mode.NULLS:
        bad.update(name=None, colour=None, count=None, maybe=None)
    elif mode is Mode.BAD_ENUM:
        bad.update(colour="PURPLE", maybe_colour=7)
    elif mode is Mode.BAD_INT:
        bad.update(count="seven")
    elif mode is Mode.HUGE_INT:
        bad.update(count=2**40)
    elif mode is Mode.BAD_FLOAT:
        bad.update(ratio=float("nan"))
    elif mode is Mode.BAD_DATE:
        bad.update(at="yesterday")
    elif mode is Mode.MISSING:
        del bad["name"], bad["colour"]
    elif mode is Mode.EXCEPTION:
        bad.update(name=ValueError("an exception as a value"), maybe=KeyError("k"))
    elif mode is Mode.RAISING:
        return _Raising()
    elif mode is Mode.AWAITABLE:
        bad.update(maybe=_Later())
    elif mode is Mode.ENUM_BY_VALUE:
        bad.update(colour="GREEN", maybe_colour="RED")
    elif mode is Mode.SUBCLASS_STR:
        bad.update(name=type("Shouty", (str,), {})("sub"), id=12, maybe=3.5)
    elif mode is Mode.BOOL_FROM_INT:
        bad.update(flag=1, count=True, ratio=2)
    elif mode is Mode.NULL_ITEM:
        return None
    return SimpleNamespace(**bad)


@strawberry.type
class Query:
    @strawberry.field
    def items(self, mode: Mode = Mode.GOOD) -> list[Item]:
        return [_item(mode, n) for n in range(4)]

    @strawberry.field
    def maybe_items(self, mode: Mode = Mode.GOOD) -> list[Item | None] | None:
        return [_item(mode, n) for n in range(4)]

    @strawberry.field
    def item(self, mode: Mode = Mode.GOOD) -> Item | None:
        return _item(mode, 1)

    @strawberry.field
    async def later_items(self, mode: Mode = Mode.GOOD) -> list[Item]:
        await asyncio.sleep(0)
        return [_item(mode, n) for n in range(3)]

    @strawberry.field
    def named(self) -> list[Named]:
        return [Tagged(name="n", tag="t"), Tagged(name="m", tag="u")]

    @strawberry.field
    def tagged(self) -> list[Tagged]:
        return [Tagged(name="n", tag="t")]


def _schemas(**kwargs: Any) -> tuple[strawberry.Schema, strawberry.Schema]:
    fast = strawberry.Schema(
        query=Query, types=[Tagged], execution_context_class=FastExecutionContext, **kwargs
    )
    stock = strawberry.Schema(
        query=Query,
        types=[Tagged],
        execution_context_class=StrawberryGraphQLCoreExecutionContext,
        **kwargs,
    )
    return fast, stock


FAST, STOCK = _schemas()


def _errors(result: Any) -> list[Any]:
    return [
        (e.message, e.path, [(loc.line, loc.column) for loc in e.locations or []], e.extensions)
        for e in result.errors or []
    ]


def assert_same(fast: Any, stock: Any) -> None:
    # orjson keeps key order: the same keys in the same order, not only equal dicts.
    assert orjson.dumps(fast.data) == orjson.dumps(stock.data)
    assert _errors(fast) == _errors(stock)


async def both(
    query: str,
    variables: dict[str, Any] | None = None,
    schemas: tuple[Any, Any] = (FAST, STOCK),
    context: Any = None,
) -> Any:
    fast_schema, stock_schema = schemas
    # A copy each: strawberry's `_entities` pops `__typename` out of the representations.
    fast = await fast_schema.execute(
        query, variable_values=copy.deepcopy(variables), context_value=context
    )
    stock = await stock_schema.execute(
        query, variable_values=copy.deepcopy(variables), context_value=context
    )
    assert_same(fast, stock)
    return fast


ALL_LEAVES = (
    "id name count ratio flag colour at maybe maybeColour alsoKnownAs tags allowed __typename shout"
)
CORPUS = [
    f"{{ items {{ {ALL_LEAVES} }} }}",
    f"{{ maybeItems {{ {ALL_LEAVES} }} }}",
    f"{{ item {{ {ALL_LEAVES} }} }}",
    f"{{ laterItems {{ {ALL_LEAVES} later }} }}",
    "{ items { id guarded } }",
    "{ maybeItems { id guarded name } }",
    "{ items { id refused name } }",
    '{ items { id echo echo2: echo(text: "y") } }',
    "{ items { a: name b: name name c: colour t: __typename } }",
    "{ items { children { id name colour children { id } } nullableChildren { id name } } }",
    "{ items { ...F } } fragment F on Item { id name ... on Item { colour maybe } }",
    "{ items { id ... @include(if: false) { name } name @skip(if: true) colour @include(if: true) } }",
    "query($s: Boolean!) { items { id name @skip(if: $s) } }",
    "{ named { name __typename ... on Tagged { tag } } tagged { name tag } }",
    "{ items { later id name } }",
    # Errors of concurrent branches at different depths: their order is the order they occur.
    "{ items { laterRefused refused laterChild { laterRefused id } } }",
    "{ laterItems { laterChild { laterChild { laterRefused } } laterRefused } }",
    "{ items { laterChild { laterRefused } } laterItems { laterRefused name } }",
    "{ item { laterChild { laterChild { laterChild { laterRefused } } } } items { refused } }",
    # A non-null error nulls the whole response while another branch still runs: graphql-core
    # keeps the errors raised before that moment only (found by the generated operations when
    # an object's single awaitable field was awaited in place, a loop turn earlier).
    "{ item { later } laterItems { shout } }",
    "{ laterItems { shout } item { later } }",
    "{ item { laterChild { id } later } laterItems { shout name } }",
    "{ __typename items { __typename } }",
]


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("query", CORPUS)
async def test_every_corpus_operation_answers_as_graphql_core(query: str, mode: Mode) -> None:
    text = query.replace("items {", f"items(mode: {mode.name}) {{", 1).replace(
        "item {", f"item(mode: {mode.name}) {{", 1
    )
    await both(text, {"s": True})


async def test_the_corpus_reaches_the_short_path_and_its_errors() -> None:
    # Not vacuous: good data answers without errors, bad data with graphql-core's messages.
    good = await both(f"{{ items {{ {ALL_LEAVES} }} }}")
    assert good.errors is None and good.data["items"][0]["colour"] == "RED"
    nulls = await both("{ items(mode: NULLS) { id name } }")
    assert "Cannot return null for non-nullable field Item.name." in [
        e.message for e in nulls.errors
    ]
    guarded = await both("{ items { id guarded } }")
    assert guarded.data is None and guarded.errors[0].message == "not for you"


def test_plain_fields_are_only_resolverless_fields_without_extensions() -> None:
    item = FAST._schema.type_map["Item"]
    plain = plain_fields(item)  # type: ignore[arg-type]
    assert {"id", "name", "count", "ratio", "flag", "colour", "at", "maybe"} <= set(plain)
    assert "alsoKnownAs" in plain  # by its GraphQL name, read by its Python name
    # A permission class is a field extension: never read around it.
    assert "guarded" not in plain and "allowed" not in plain
    # Resolvers, arguments, lists and objects go through graphql-core.
    assert not {"shout", "later", "refused", "echo", "tags", "children"} & set(plain)


def test_the_boards_fields_take_the_short_path() -> None:
    # A strawberry upgrade that changes how it marks basic fields would silently lose the
    # short path; this says so.
    from services.audit.api.graphql import build_schema as audit_schema
    from services.workorders.api.graphql import build_schema as workorders_schema

    audit = audit_schema()
    types = audit._schema.type_map  # type: ignore[attr-defined]
    assert {"action", "outcome", "id", "seq"} <= set(plain_fields(types["AuditEvent"]))
    workorders = workorders_schema(serving=True)
    types = workorders._schema.type_map  # type: ignore[attr-defined]
    assert {"id", "title", "status"} <= set(plain_fields(types["WorkOrder"]))
    assert {"id", "kind", "label"} <= set(plain_fields(types["SecretRef"]))
    # No extension of theirs hooks every resolve (that would turn the short path off).
    for schema in (audit, workorders):
        assert schema.execution_context_class is FastExecutionContext
        assert not any(e._implements_resolve() for e in schema.get_extensions())


class CountingResolves(SchemaExtension):
    seen: list[str] = []

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        CountingResolves.seen.append(info.field_name)
        return _next(root, info, *args, **kwargs)


async def test_a_resolve_hook_sees_every_field_with_the_fast_context() -> None:
    fast, stock = _schemas(extensions=[CountingResolves])
    query = "{ items { id name colour children { id } } }"
    CountingResolves.seen = []
    await fast.execute(query)
    through_fast = list(CountingResolves.seen)
    CountingResolves.seen = []
    await stock.execute(query)
    assert through_fast == CountingResolves.seen and "colour" in through_fast
    await both(query, schemas=(fast, stock))


# ---- generated operations -------------------------------------------------------------------

_LOOP = asyncio.new_event_loop()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=queries(FAST.as_str()))
def test_generated_operations_answer_as_graphql_core(query: str) -> None:
    _LOOP.run_until_complete(both(query))


# ---- the real subgraphs, services faked -----------------------------------------------------


def _subgraph(build: Any) -> tuple[Any, Any]:
    fast = build()
    stock = build()
    stock.execution_context_class = StrawberryGraphQLCoreExecutionContext
    assert fast.execution_context_class is FastExecutionContext
    return fast, stock


AUDIT_OPERATIONS = [
    fakes.AUDIT_BOARD,
    """query($r: [_Any!]!) { _entities(representations: $r) { __typename
      ... on WorkOrder { id auditTrail { a: action action outcome __typename o: outcome } } } }""",
    """query($r: [_Any!]!) { _entities(representations: $r) { ...T } }
      fragment T on WorkOrder { auditTrail { ...E seq occurredAt } }
      fragment E on AuditEvent { id action outcome hash prevHash targetType targetId service
      sourceIp traceId secretRefId details { key value } actor { id } workOrder { id } }""",
]


@pytest.mark.parametrize("events", [0, 1, 10])
@pytest.mark.parametrize("query", AUDIT_OPERATIONS)
async def test_audit_operations_answer_as_graphql_core(query: str, events: int) -> None:
    from services.audit.api.graphql import build_schema

    runtime = fakes.FakeAuditRuntime(service=fakes.FakeAuditService(events_per_order=events))
    variables = fakes.audit_variables()
    # A junk representation among the good ones: its error, in its place.
    variables["r"].insert(3, {"__typename": "WorkOrder"})
    result = await both(query, variables, _subgraph(build_schema), fakes.context(runtime))
    assert result.errors and result.data["_entities"][4] is not None


async def test_a_refused_audit_read_is_refused_by_both() -> None:
    from services.audit.api.graphql import build_schema

    # A principal without audit.read: every entity refused, the same errors both ways.
    technician = fakes.FakeVerifier(
        principal=fakes.Principal(
            user_id=fakes.ADMIN.user_id,
            org_id=fakes.ORG,
            roles=frozenset({fakes.Role.TECHNICIAN}),
            region_ids=frozenset({fakes.REGION}),
            session_id="s",
            epoch=1,
        )
    )
    runtime = fakes.FakeAuditRuntime()
    context = fakes.context(runtime, technician)
    result = await both(
        fakes.AUDIT_BOARD, fakes.audit_variables(), _subgraph(build_schema), context
    )
    assert result.errors and {e.extensions["code"] for e in result.errors} == {"FORBIDDEN"}
    assert runtime.service.calls == 0


WORKORDERS_OPERATIONS = [
    fakes.WORKORDERS_BOARD,
    """query($region: ID) { workOrders(regionId: $region, first: 5) { pageInfo { hasNextPage
      endCursor } edges { cursor node { ...O } } } }
      fragment O on WorkOrder { id number title description status priority scheduledStart
      scheduledEnd createdAt completedAt __typename site { id address } assignee { id }
      secretRefs { ... on SecretRef { i: id kind label version updatedAt __typename } } }""",
    """query($region: ID) { a: workOrders(regionId: $region, first: 3) { edges { node { id } } }
      b: workOrders(regionId: $region, first: 2) { edges { node { title status st: status } } } }""",
]


@pytest.mark.parametrize(
    "addresses",
    ["good", "unreadable", "missing"],
)
@pytest.mark.parametrize("query", WORKORDERS_OPERATIONS)
async def test_workorders_operations_answer_as_graphql_core(query: str, addresses: str) -> None:
    from services.workorders.api.graphql import build_schema

    service = fakes.FakeWorkOrdersService()
    if addresses == "unreadable":
        service.addresses[fakes.SITE_IDS[1]] = Unreadable(site_id=fakes.SITE_IDS[1])
    elif addresses == "missing":
        service.addresses[fakes.SITE_IDS[2]] = None
    runtime = fakes.FakeWorkOrdersRuntime(service=service)
    await both(
        query,
        {"region": fakes.REGION},
        _subgraph(lambda: build_schema(serving=True)),
        fakes.context(runtime),
    )
