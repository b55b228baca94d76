"""The kit's text policy on the workorders subgraph (issue 17): control characters and bidi
controls are refused as BAD_USER_INPUT naming the field, before PostgreSQL sees them; the
honest spelling of the same request still works."""

from __future__ import annotations

import pytest

from tests.integration.workorders.conftest import (
    CREATE_CUSTOMER,
    CREATE_WO,
    PREPARE_UPLOAD,
    WORK_ORDER,
    Org,
    Running,
    error_code,
    make_customer,
    ok,
)

pytestmark = pytest.mark.integration


async def test_a_nul_in_an_id_variable_is_bad_input_not_an_internal_error(
    running: Running, org: Org
) -> None:
    # Before the policy PostgreSQL refused the byte and the answer was INTERNAL_SERVER_ERROR.
    body = await running.gql(WORK_ORDER, {"id": "ab\u0000cd"}, token=org.dispatcher.token)
    assert error_code(body) == "BAD_USER_INPUT", body
    assert "id" in body["errors"][0]["message"]
    assert "\u0000" not in str(body)


async def test_a_nul_in_an_id_literal_is_bad_input(running: Running, org: Org) -> None:
    body = await running.gql('{ workOrder(id: "ab\\u0000cd") { id } }', token=org.dispatcher.token)
    assert error_code(body) == "BAD_USER_INPUT", body


async def test_a_nul_in_a_filter_is_bad_input(running: Running, org: Org) -> None:
    body = await running.gql(
        "query($r: ID) { workOrders(regionId: $r) { edges { cursor } } }",
        {"r": "\u0000"},
        token=org.dispatcher.token,
    )
    assert error_code(body) == "BAD_USER_INPUT", body


async def test_bidi_controls_in_a_customer_name_or_a_label_are_refused(
    running: Running, org: Org
) -> None:
    body = await running.gql(
        CREATE_CUSTOMER,
        {"input": {"name": "Zone \u202e evil", "regionId": org.r1}},
        token=org.dispatcher.token,
    )
    assert error_code(body) == "BAD_USER_INPUT", body
    assert "input.name" in body["errors"][0]["message"]
    _, site_id = await make_customer(running, org)
    body = await running.gql(
        PREPARE_UPLOAD,
        {"s": site_id, "k": "DOOR_CODE", "l": "Back door \u2066x\u2069"},
        token=org.dispatcher.token,
    )
    assert error_code(body) == "BAD_USER_INPUT", body
    # The honest label still works.
    data = await ok(
        running,
        PREPARE_UPLOAD,
        {"s": site_id, "k": "DOOR_CODE", "l": "Back door"},
        org.dispatcher.token,
    )
    assert data["prepareSecretUpload"]["secretRef"]["label"] == "Back door"


async def test_a_description_keeps_its_lines_but_not_other_controls(
    running: Running, org: Org
) -> None:
    _, site_id = await make_customer(running, org)
    data = await ok(
        running,
        CREATE_WO,
        {"input": {"siteId": site_id, "title": "Boiler", "description": "Line one\n\tLine two"}},
        org.dispatcher.token,
    )
    assert data["createWorkOrder"]["description"] == "Line one\n\tLine two"
    body = await running.gql(
        CREATE_WO,
        {"input": {"siteId": site_id, "title": "Boiler", "description": "bell \u0007"}},
        token=org.dispatcher.token,
    )
    assert error_code(body) == "BAD_USER_INPUT", body
    assert "input.description" in body["errors"][0]["message"]
    body = await running.gql(
        CREATE_WO,
        {"input": {"siteId": site_id, "title": "Boiler\nsecond line"}},
        token=org.dispatcher.token,
    )
    assert error_code(body) == "BAD_USER_INPUT", body


async def test_every_string_has_a_length_limit(running: Running, org: Org) -> None:
    body = await running.gql(WORK_ORDER, {"id": "a" * 5000}, token=org.dispatcher.token)
    assert error_code(body) == "BAD_USER_INPUT", body
