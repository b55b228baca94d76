"""Audit resolves a request's WorkOrder representations as one batch (WorkOrder.
resolve_references): the caller is checked once, and every selected trail is read in one query
at entity resolution, so each entity's auditTrail is a plain read. It answers exactly as the
per-entity path (resolve_reference, then auditTrail through the request's DataLoader) does:
the same data and the same errors in the same places, for readers and for refused callers
(FORBIDDEN on every entity, nothing read), for junk and repeated representations, and when
the trail read fails. The per-entity path is still what a WorkOrder reached any other way
(AuditEvent.workOrder) takes."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from doorward_kit.auth import Principal, Role
from doorward_kit.errors import DoorwardError, ErrorCode, unauthenticated, unavailable
from services.audit.api import graphql as audit_graphql
from tests.fixtures import subgraph_fakes as fakes

pytestmark = pytest.mark.unit

OPERATIONS = [
    fakes.AUDIT_BOARD,
    """query($r: [_Any!]!) { _entities(representations: $r) { __typename
      ... on WorkOrder { id a: auditTrail { action } b: auditTrail { outcome seq } } } }""",
    """query($r: [_Any!]!) { _entities(representations: $r) { ...T } }
      fragment T on WorkOrder { auditTrail { ...E occurredAt } }
      fragment E on AuditEvent { id action outcome hash prevHash targetType targetId service
      sourceIp traceId secretRefId details { key value } actor { id } workOrder { id } }""",
    """query($r: [_Any!]!, $s: Boolean!) { _entities(representations: $r) {
      ... on WorkOrder { id auditTrail @skip(if: $s) { action } } } }""",
    """query($r: [_Any!]!) { _entities(representations: $r) { ... on WorkOrder { id } } }""",
]


def _principal(*roles: Role) -> Principal:
    return Principal(
        user_id=fakes.ADMIN.user_id,
        org_id=fakes.ORG,
        roles=frozenset(roles),
        region_ids=frozenset({fakes.REGION}),
        session_id="s",
        epoch=1,
    )


@dataclass
class FailingAuditService(fakes.FakeAuditService):
    error: Exception | None = None

    async def work_order_trails(
        self, session: Any, principal: Principal, ids: Any, make: Any, columns: Any = None
    ) -> Any:
        found = await super().work_order_trails(session, principal, ids, make, columns)
        if self.error is not None:
            raise self.error
        return found


@pytest.fixture(scope="module")
def schemas() -> tuple[Any, Any]:
    """(the batch path, the per-entity path): the same types, one schema built while WorkOrder
    has no resolve_references."""
    batched = audit_graphql.build_schema()
    assert set(batched._batch_resolvers) == {"WorkOrder"}
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(audit_graphql.WorkOrder, "resolve_references")
        per_entity = audit_graphql.build_schema()
        assert batched._batch_resolvers and not per_entity._batch_resolvers
    return batched, per_entity


def _errors(result: Any) -> list[tuple[Any, ...]]:
    return [
        (e.message, e.path, e.locations, (e.extensions or {}).get("code"))
        for e in result.errors or []
    ]


async def _both(
    schemas: tuple[Any, Any],
    query: str,
    variables: dict[str, Any],
    service: fakes.FakeAuditService,
    verifier: Any = None,
) -> tuple[Any, Any]:
    """The answer of each path, asserted the same; and the contexts' DataLoaders used."""
    answers, loaders = [], []
    for schema in schemas:
        service.calls = 0
        context = fakes.context(fakes.FakeAuditRuntime(service=service), verifier)
        answer = await schema.execute(
            query, variable_values=copy.deepcopy(variables), context_value=context
        )
        answers.append((answer, service.calls))
        loaders.append(set(context._loaders))
    (batched, batch_calls), (per_entity, per_entity_calls) = answers
    assert orjson.dumps(batched.data) == orjson.dumps(per_entity.data)
    # The per-entity path raises its errors entity by entity as their coroutines finish; the
    # batch in the entities' order. The same errors, each in the same place.
    assert sorted(_errors(batched), key=repr) == sorted(_errors(per_entity), key=repr)
    assert batch_calls == per_entity_calls  # the same reads: one query per request, or none
    assert "audit_trails" not in loaders[0]  # no trail went through the loader
    return batched, batch_calls


def _variables(count: int = 20, *, junk: bool = False, repeat: bool = False) -> dict[str, Any]:
    variables = fakes.audit_variables(count)
    if repeat:
        variables["r"] += [dict(r) for r in variables["r"][:3]]
    if junk:
        variables["r"].insert(2, {"__typename": "WorkOrder"})
        variables["r"].insert(5, {"__typename": "WorkOrder", "id": "x", "nope": "y"})
    variables["s"] = False
    return variables


@pytest.mark.parametrize("shape", ["plain", "junk", "repeat", "one", "none"])
@pytest.mark.parametrize("events", [0, 10])
@pytest.mark.parametrize("query", OPERATIONS)
async def test_readers_get_the_per_entity_answer_from_one_read(schemas, query, events, shape):
    variables = _variables(
        {"one": 1, "none": 0}.get(shape, 20), junk=shape == "junk", repeat=shape == "repeat"
    )
    service = fakes.FakeAuditService(events_per_order=events)
    answer, calls = await _both(schemas, query, variables, service)
    selected = "auditTrail" in query and shape != "none"
    assert calls == (1 if selected else 0)
    assert len(answer.data["_entities"]) == len(variables["r"])
    if shape == "junk":
        assert [e.path for e in answer.errors] == [["_entities", 2], ["_entities", 5]]
    else:
        assert answer.errors is None


async def test_a_trail_not_selected_is_not_read(schemas):
    variables = _variables()
    variables["s"] = True  # auditTrail @skip(if: true)
    service = fakes.FakeAuditService()
    answer, calls = await _both(schemas, OPERATIONS[3], variables, service)
    assert calls == 0 and answer.errors is None
    assert answer.data["_entities"][0] == {"id": fakes.ORDER_IDS[0]}


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR])
async def test_an_honest_reader_gets_every_trail(schemas, role):
    verifier = fakes.FakeVerifier(principal=_principal(role))
    answer, calls = await _both(
        schemas, fakes.AUDIT_BOARD, _variables(), fakes.FakeAuditService(), verifier
    )
    assert calls == 1 and answer.errors is None
    assert all(len(item["auditTrail"]) == 10 for item in answer.data["_entities"])


@pytest.mark.parametrize("role", [Role.DISPATCHER, Role.TECHNICIAN, Role.SUBCONTRACTOR])
@pytest.mark.parametrize("query", OPERATIONS)
async def test_a_caller_without_audit_read_is_refused_on_every_entity(schemas, role, query):
    verifier = fakes.FakeVerifier(principal=_principal(role))
    variables = _variables(junk=True)
    answer, calls = await _both(schemas, query, variables, fakes.FakeAuditService(), verifier)
    assert calls == 0  # nothing read
    assert answer.data == {"_entities": [None] * len(variables["r"])}
    codes = {tuple(e.path): e.extensions["code"] for e in answer.errors}
    assert len(codes) == len(answer.errors) == len(variables["r"])  # one error per entity
    for index in range(len(variables["r"])):
        expected = "BAD_USER_INPUT" if index in (2, 5) else ErrorCode.FORBIDDEN.value
        assert codes[("_entities", index)] == expected


async def test_a_refused_token_is_refused_on_every_entity(schemas):
    verifier = fakes.FakeVerifier(refuse=unauthenticated("token expired"))
    answer, calls = await _both(
        schemas, fakes.AUDIT_BOARD, _variables(), fakes.FakeAuditService(), verifier
    )
    assert calls == 0
    assert [e.extensions["code"] for e in answer.errors] == ["UNAUTHENTICATED"] * 20


@pytest.mark.parametrize("error", [unavailable("the trail is not readable now"), OSError("x")])
async def test_a_failed_trail_read_fails_each_entitys_trail_in_its_place(schemas, error):
    service = FailingAuditService(error=error)
    answer, calls = await _both(schemas, fakes.AUDIT_BOARD, _variables(junk=True), service)
    assert calls == 1
    paths = sorted((e.path for e in answer.errors), key=repr)
    good = [i for i in range(22) if i not in (2, 5)]
    assert paths == sorted(
        [["_entities", 2], ["_entities", 5]] + [["_entities", i, "auditTrail"] for i in good],
        key=repr,
    )
    codes = {e.extensions["code"] for e in answer.errors if len(e.path) == 3}
    internal = ErrorCode.INTERNAL.value
    assert codes == {error.code.value if isinstance(error, DoorwardError) else internal}


async def test_a_trail_reached_through_an_event_is_read_through_the_loader(schemas):
    # AuditEvent.workOrder is no entity of the batch: its auditTrail takes the loader, one
    # query for all of them.
    service = fakes.FakeAuditService()
    query = """query($r: [_Any!]!) { _entities(representations: $r) { ... on WorkOrder {
      auditTrail { workOrder { id auditTrail { action } } } } } }"""
    batched, _ = schemas
    context = fakes.context(fakes.FakeAuditRuntime(service=service))
    answer = await batched.execute(query, variable_values=_variables(2), context_value=context)
    assert answer.errors is None
    assert service.calls == 2  # the batch's read, then the loader's one for the events' orders
    assert "audit_trails" in context._loaders
    trail = answer.data["_entities"][0]["auditTrail"]
    assert len(trail) == 10
    assert all(len(e["workOrder"]["auditTrail"]) == 10 for e in trail)
