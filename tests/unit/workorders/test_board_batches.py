"""The board's selection at workorders, services faked: every relation is one batch per level,
whatever the number of secret references per order (each used to be awaited in turn: an order's
second reference went to secrets in a second GetSecretRefs, its third in a third)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from services.workorders.api import graphql as graphql_api
from services.workorders.api.graphql import build_schema
from tests.fixtures import subgraph_fakes as fakes

pytestmark = pytest.mark.unit

SCHEMA = build_schema(serving=True)


@pytest.mark.parametrize("per_order", [0, 1, 3])
async def test_the_board_is_one_call_per_relation(per_order: int) -> None:
    service = fakes.FakeWorkOrdersService(secrets_per_order=per_order)
    runtime = fakes.FakeWorkOrdersRuntime(service=service)
    result = await SCHEMA.execute(
        fakes.WORKORDERS_BOARD,
        variable_values={"region": fakes.REGION},
        context_value=fakes.context(runtime),
    )
    assert result.errors is None
    nodes = [e["node"] for e in result.data["workOrders"]["edges"]]
    assert len(nodes) == 20
    # Every order shows each of its references, in its order.
    for k, node in enumerate(nodes):
        start = k * per_order % 40
        assert [r["id"] for r in node["secretRefs"]] == fakes.SECRET_IDS[start : start + per_order]
        assert node["site"]["address"].endswith("Main Street")
    expected = ["list_work_orders", "visible_sites", "secret_ids_of_orders"]
    expected += ["secret_refs"] if per_order else []
    assert sorted(service.calls) == sorted([*expected, "read_site_addresses"])


async def test_an_unreadable_address_is_its_fields_error_only() -> None:
    from services.workorders.service import Unreadable

    service = fakes.FakeWorkOrdersService()
    service.addresses[fakes.SITE_IDS[1]] = Unreadable(site_id=fakes.SITE_IDS[1])
    runtime = fakes.FakeWorkOrdersRuntime(service=service)
    result = await SCHEMA.execute(
        fakes.WORKORDERS_BOARD,
        variable_values={"region": fakes.REGION},
        context_value=fakes.context(runtime),
    )
    nodes = [e["node"] for e in result.data["workOrders"]["edges"]]
    unreadable = [n for n in nodes if n["site"]["address"] is None]
    assert len(unreadable) == 4  # the orders of site 1
    assert {tuple(e.path[-2:]) for e in result.errors} == {("site", "address")}
    assert len(result.errors) == 4


# ---- the list resolvers' batches answer as the rows' own fields did --------------------------
#
# `workOrders` and `myJobs` load what the operation selects of `site`, `site.address` and
# `secretRefs` in one batch per level and hand every row its value (api/graphql.py
# `_prefetch`). Each operation below runs with that and with every row loading its own fields
# (`_prefetch` off, as before): the same data, the same errors in the same places, and the same
# service calls with the same keys in the same order (the addresses' are the audited contact
# reads: only what the operation selects, each site once).

BOARD_OPERATIONS = [
    fakes.WORKORDERS_BOARD,
    """query($region: ID) { workOrders(regionId: $region, first: 5) { pageInfo { hasNextPage }
      edges { cursor node { ...O } } } }
      fragment O on WorkOrder { id __typename site { id address } assignee { id }
      secretRefs { ... on SecretRef { i: id kind label version updatedAt __typename } } }""",
    # Aliases: every alias of a field is the one batch.
    """query($region: ID) { workOrders(regionId: $region) { edges { node { id
      a: site { address } b: site { id } s: secretRefs { id } secretRefs { label } } } } }""",
    # A field skipped by a variable is not loaded (an address is an audited read).
    """query($region: ID, $yes: Boolean!, $no: Boolean!) { workOrders(regionId: $region) {
      edges { node { site { id address @include(if: $no) } secretRefs @skip(if: $yes) { id } }
      also: node @include(if: $yes) { id } } } }""",
    """query($region: ID, $yes: Boolean!) { workOrders(regionId: $region) { edges { node {
      site { id a: address @include(if: $yes) } } } } }""",
    # Fragments on the connection, the edge and the site.
    """query($region: ID) { workOrders(regionId: $region, first: 7) { ...P } }
      fragment P on WorkOrderConnection { edges { ... on WorkOrderEdge { node {
      ... on WorkOrder { site { ...S } } } } } }
      fragment S on Site { address region { id } }""",
    "query($region: ID) { workOrders(regionId: $region) { edges { node { site { id } } } } }",
    "query($region: ID) { workOrders(regionId: $region) { edges { node { secretRefs { id } } } } }",
    "query($region: ID) { workOrders(regionId: $region) { edges { node { id title } } } }",
    "{ myJobs { id site { id address } secretRefs { id kind } } }",
    # Another field reading one of the page's addresses: still one read of it.
    f"""query($region: ID) {{ workOrders(regionId: $region, first: 3) {{ edges {{ node {{
      site {{ address }} }} }} }} site(id: "{fakes.SITE_IDS[1]}") {{ address }} }}""",
    # Two pages in one request.
    """query($region: ID) { a: workOrders(regionId: $region, first: 3) { edges { node {
      site { address } } } } b: workOrders(regionId: $region, first: 8) { edges { node {
      site { address } secretRefs { id } } } } }""",
]

# What the services answer: good, an unreadable and a missing address, an order whose site is
# not visible, orders without references, and each call of the board failing.
CONDITIONS = [
    "good",
    "unreadable",
    "missing",
    "invisible_site",
    "no_refs",
    "fail:visible_sites",
    "fail:read_site_addresses",
    "fail:secret_ids_of_orders",
    "fail:secret_refs",
]


def _service(condition: str) -> fakes.FakeWorkOrdersService:
    from dataclasses import replace

    from services.workorders.service import Unreadable

    service = fakes.FakeWorkOrdersService()
    if condition == "unreadable":
        service.addresses[fakes.SITE_IDS[1]] = Unreadable(site_id=fakes.SITE_IDS[1])
    elif condition == "missing":
        service.addresses[fakes.SITE_IDS[2]] = None
    elif condition == "invisible_site":
        service.orders[3] = replace(service.orders[3], site_id=fakes._uuid(99, 2))
    elif condition == "no_refs":
        service.secrets_per_order = 0
    elif condition.startswith("fail:"):
        service.failing = frozenset({condition.removeprefix("fail:")})
    return service


def _answer(result: Any) -> tuple[bytes, list[Any]]:
    errors = [
        (e.message, e.path, [(loc.line, loc.column) for loc in e.locations or []], e.extensions)
        for e in result.errors or []
    ]
    return orjson.dumps(result.data), errors


async def _run(query: str, condition: str) -> tuple[tuple[bytes, list[Any]], list[Any]]:
    service = _service(condition)
    result = await SCHEMA.execute(
        query,
        variable_values={"region": fakes.REGION, "yes": True, "no": False},
        context_value=fakes.context(fakes.FakeWorkOrdersRuntime(service=service)),
    )
    return _answer(result), service.reads


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("query", BOARD_OPERATIONS)
async def test_a_pages_batches_answer_as_its_rows_did(
    query: str, condition: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched, batched_reads = await _run(query, condition)
    with monkeypatch.context() as patch:

        async def per_row(*args: Any) -> None:
            return None

        patch.setattr(graphql_api, "_prefetch", per_row)
        per_row_answer, per_row_reads = await _run(query, condition)
    assert batched == per_row_answer
    # The same keys read by the same calls (each address once); never more calls. Where
    # another root field asks for the same sites, the batches may merge with its own.
    assert _keys(batched_reads) == _keys(per_row_reads)
    assert Counter(n for n, _ in batched_reads) <= Counter(n for n, _ in per_row_reads)
    if "site(id:" not in query:
        # The very same calls, each with its keys in the same order (which of two independent
        # calls of one level goes first is the event loop's business).
        assert sorted(batched_reads) == sorted(per_row_reads)


def _keys(reads: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    return sorted((name, key) for name, keys in reads for key in keys)


async def test_the_board_takes_no_coroutine_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The board's per-row fields answer from the page's batches: none of them loads."""
    loads: list[str] = []
    for name in ("_load_site", "_load_refs"):
        original = getattr(graphql_api.WorkOrder, name)

        def counting(self: Any, info: Any, _name: str = name, _f: Any = original) -> Any:
            loads.append(_name)
            return _f(self, info)

        monkeypatch.setattr(graphql_api.WorkOrder, name, counting)
    original_address = graphql_api.Site._load_address

    def counting_address(self: Any, info: Any) -> Any:
        loads.append("_load_address")
        return original_address(self, info)

    monkeypatch.setattr(graphql_api.Site, "_load_address", counting_address)
    (_data, errors), reads = await _run(fakes.WORKORDERS_BOARD, "good")
    assert not errors and loads == []
    # The address batch is the 20 orders' 5 sites, once each, in the page's order.
    assert ("read_site_addresses", fakes.SITE_IDS) in reads
    # Where nobody batched (an entity), the row loads its own.
    entities = f"""query {{ _entities(representations: [{{__typename: "WorkOrder",
      id: "{fakes.ORDER_IDS[0]}"}}]) {{ ... on WorkOrder {{ site {{ address }} }} }} }}"""
    await SCHEMA.execute(entities, context_value=fakes.context(fakes.FakeWorkOrdersRuntime()))
    assert "_load_site" in loads and "_load_address" in loads
