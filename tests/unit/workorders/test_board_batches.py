"""The board's selection at workorders, services faked: every relation is one batch per level,
whatever the number of secret references per order (each used to be awaited in turn: an order's
second reference went to secrets in a second GetSecretRefs, its third in a third)."""

from __future__ import annotations

import pytest

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
