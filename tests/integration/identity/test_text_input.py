"""The kit's text policy on the identity subgraph (issue 17): display names and region names
with Unicode bidirectional controls are refused (a name could render reversed in a
dispatcher's list); NUL never reaches PostgreSQL. The honest names still work."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.identity.conftest import (
    CREATE_REGION,
    CREATE_USER,
    USER_PASSWORD,
    create_region,
    error_code,
    login,
)

pytestmark = pytest.mark.integration

UPDATE_USER = """mutation($id: ID!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) { id displayName } }"""
BIDI = [
    "\u202e",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
]


def _user(region: str, display_name: str) -> dict:
    return {
        "input": {
            "email": f"u-{uuid.uuid4().hex[:10]}@example.com",
            "displayName": display_name,
            "roles": ["TECHNICIAN"],
            "regionIds": [region],
            "initialPassword": USER_PASSWORD,
        }
    }


@pytest.mark.parametrize("control", BIDI)
async def test_a_display_name_with_a_bidi_control_is_refused(running, org, control):
    region = await create_region(running, org, f"R-{uuid.uuid4().hex[:6]}")
    body = await running.gql(
        CREATE_USER, _user(region, f"Zone {control} evil"), token=org.admin_token
    )
    assert error_code(body) == "BAD_USER_INPUT", body
    assert "input.displayName" in body["errors"][0]["message"]


async def test_updating_a_display_name_to_a_reversed_one_is_refused(running, org):
    region = await create_region(running, org, f"R-{uuid.uuid4().hex[:6]}")
    body = await running.gql(CREATE_USER, _user(region, "Zone Tech"), token=org.admin_token)
    assert "errors" not in body, body
    user_id = body["data"]["createUser"]["id"]
    body = await running.gql(
        UPDATE_USER,
        {"id": user_id, "input": {"displayName": "Zone \u202e evil"}},
        token=org.admin_token,
    )
    assert error_code(body) == "BAD_USER_INPUT", body
    # The honest rename works, and right-to-left letters themselves are fine.
    body = await running.gql(
        UPDATE_USER, {"id": user_id, "input": {"displayName": "Zone שלום"}}, token=org.admin_token
    )
    assert body["data"]["updateUser"]["displayName"] == "Zone שלום", body


async def test_a_region_name_with_a_bidi_control_or_a_nul_is_refused(running, org):
    for bad in ("North \u202e", "North\u0000", "North\nSouth"):
        body = await running.gql(CREATE_REGION, {"n": bad}, token=org.admin_token)
        assert error_code(body) == "BAD_USER_INPUT", body
        assert "name" in body["errors"][0]["message"]


async def test_a_nul_in_an_id_or_a_login_is_bad_input(running, org):
    body = await running.gql(
        "query($id: ID!) { user(id: $id) { id } }", {"id": "ab\u0000cd"}, token=org.admin_token
    )
    assert error_code(body) == "BAD_USER_INPUT", body
    body = await login(running, "a\u0000@example.com", "x\u0000y")
    assert error_code(body) == "BAD_USER_INPUT", body
    assert "\u0000" not in str(body)
