"""What `me` and a federated batch of users cost identity in PostgreSQL round trips (issue 11):
the session check and the answer are one statement each, with no transaction around them and
no ping of a busy pooled connection; a session checked a moment ago is remembered until a
session change (tests/security/test_identity_session_cache.py); and a logout is still refused
on the next request."""

from __future__ import annotations

import pytest

from services.identity.session_hub import SessionChange
from tests.fixtures.round_trips import simple_statements, statements_of
from tests.integration.identity.conftest import Org, Running, db_of, error_code

pytestmark = pytest.mark.integration

ME = "{ me { id displayName regions { id } } }"
USERS = """query($r: [_Any!]!) { _entities(representations: $r) {
  ... on User { id displayName roles } } }"""


async def test_me_is_two_statements_and_nothing_else(running: Running, org: Org) -> None:
    await running.gql(ME, token=org.admin_token)  # warm: the pool's first checkout is pinged
    # Any session change makes identity check the session again.
    await running.identity.hub.publish(
        SessionChange(user_id="someone", org_id=org.id, epoch=1), ack_seconds=1
    )
    with (
        statements_of(db_of(running).engine) as queries,
        simple_statements(db_of(running).engine) as extra,
    ):
        answer = await running.gql(ME, token=org.admin_token)
    assert answer["data"]["me"]["id"] == org.admin_id
    assert len(queries) == 2  # the session check, then the user with their regions
    assert extra == []  # no BEGIN, COMMIT or ping around them
    with statements_of(db_of(running).engine) as queries:
        again = await running.gql(ME, token=org.admin_token)
    assert again["data"]["me"]["id"] == org.admin_id
    assert len(queries) == 1  # the session check of a moment ago is remembered


async def test_a_batch_of_users_is_one_query(
    running: Running, org: Org
) -> None:
    reps = [{"__typename": "User", "id": org.admin_id}] * 3 + [
        {"__typename": "User", "id": "nobody"}
    ]
    await running.gql(USERS, {"r": reps}, token=org.admin_token)
    with (
        statements_of(db_of(running).engine) as queries,
        simple_statements(db_of(running).engine) as extra,
    ):
        answer = await running.gql(USERS, {"r": reps}, token=org.admin_token)
    found = answer["data"]["_entities"]
    assert [e and e["id"] for e in found] == [org.admin_id] * 3 + [None]
    assert len(queries) == 1 and extra == []  # the session check is remembered (above)
    # The batch reads what a view shows, never a password hash or an MFA secret.
    assert not any("password_hash" in q or "mfa_secret" in q for q in queries)


async def test_the_session_is_still_checked_on_every_request(running: Running, org: Org) -> None:
    # The honest token works twice in a row; after logout the same token is refused at once.
    assert (await running.gql(ME, token=org.admin_token))["data"]["me"]
    assert (await running.gql(ME, token=org.admin_token))["data"]["me"]
    await running.gql("mutation { logout }", token=org.admin_token)
    refused = await running.gql(ME, token=org.admin_token)
    assert refused["data"] is None and error_code(refused) == "UNAUTHENTICATED"
