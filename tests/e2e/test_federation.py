"""One query whose data comes from all three subgraphs, through the gateway."""

import pytest

pytestmark = pytest.mark.e2e

ME = "{ me { id displayName roles assignedWorkOrders { id } accessHistory { id action } } }"


def test_me_spans_identity_workorders_and_audit(world):
    data = world.gql.data(ME, token=world.admin.token)["me"]
    assert data["id"] == world.admin.user_id
    assert data["displayName"]
    assert data["roles"] == ["ADMIN"]
    assert data["assignedWorkOrders"] == []
    # The admin's own logins are on the trail (delivered through identity's outbox).
    assert isinstance(data["accessHistory"], list)


def test_gateway_refuses_without_a_token(world):
    assert world.gql.error_codes("{ me { id } }") == ["UNAUTHENTICATED"]


def test_gateway_hides_federation_internals(world):
    codes = world.gql.error_codes("{ _service { sdl } }", token=world.admin.token)
    assert codes and codes[0] != ""
    body = world.gql.raw(
        '{ _entities(representations: [{__typename: "User", id: "x"}]) { __typename } }',
        token=world.admin.token,
    )
    assert body.get("data") is None and body["errors"]
