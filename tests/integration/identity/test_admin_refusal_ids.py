"""Found by tests/fuzz: an administrative change refused for an id that is not a UUID (e.g.
`deactivateUser(id: "1000000")`) is NOT_FOUND and audited with an empty target, not an
INTERNAL_SERVER_ERROR because the audit client refuses a digit string as a target id."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.identity.conftest import error_code, eventually

pytestmark = pytest.mark.integration

DEACTIVATE = "mutation($id: ID!, $r: String!) { deactivateUser(id: $id, reason: $r) { id } }"
UPDATE = """mutation($id: ID!) { updateUser(id: $id, input: {displayName: "X"}) { id } }"""


@pytest.mark.parametrize("junk", ["1000000", "alice@example.com", "+44 20 7946 0991", "x" * 100])
async def test_a_refused_change_of_a_junk_id_is_not_found(running, org, junk):
    for query, variables in ((DEACTIVATE, {"id": junk, "r": "left"}), (UPDATE, {"id": junk})):
        body = await running.gql(query, variables, token=org.admin_token)
        assert error_code(body) == "NOT_FOUND", body

    await eventually(lambda: bool(running.audit.of("user.deactivate", org.id)))
    for event in running.audit.of("user.deactivate", org.id):
        assert event.target_id == ""


async def test_a_refused_change_of_a_real_looking_id_keeps_it(running, org):
    unknown = str(uuid.uuid4())
    body = await running.gql(DEACTIVATE, {"id": unknown, "r": "left"}, token=org.admin_token)
    assert error_code(body) == "NOT_FOUND", body
    await eventually(
        lambda: any(e.target_id == unknown for e in running.audit.of("user.deactivate", org.id))
    )
