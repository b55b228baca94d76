"""What `me` and a federated batch of users cost identity in PostgreSQL round trips (issue 11):
the session check and the answer are one statement each, with no transaction around them and
no ping of a busy pooled connection; and the session is still checked on every request."""

from __future__ import annotations

import pytest

from tests.fixtures.round_trips import simple_statements, statements_of
from tests.integration.identity.conftest import Org, Running, db_of, error_code

pytestmark = pytest.mark.integration

ME = "{ me { id displayName regions { id } } }"
USERS = """query($r: [_Any!]!) { _entities(representations: $r) {
  ... on User { id displayName roles } } }"""


async def test_me_is_two_statements_and_nothing_else(running: Running, org: Org) -> None:
    await running.gql(ME, token=org.admin_token)  # warm: the pool's first checkout is pinged
    with (
        statements_of(db_of(running).engine) as queries,
        simple_statements(db_of(running).engine) as extra,
    ):
        answer = await running.gql(ME, token=org.admin_token)
    assert answer["data"]["me"]["id"] == org.admin_id
    assert len(queries) == 2  # the session check, then the user with their regions
    assert extra == []  # no BEGIN, COMMIT or ping around them


async def test_a_batch_of_users_is_one_query_after_the_session_check(
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
    assert len(queries) == 2 and extra == []
    # The batch reads what a view shows, never a password hash or an MFA secret.
    assert not any("password_hash" in q or "mfa_secret" in q for q in queries)


async def test_the_session_is_still_checked_on_every_request(running: Running, org: Org) -> None:
    # The honest token works twice in a row; after logout the same token is refused at once.
    assert (await running.gql(ME, token=org.admin_token))["data"]["me"]
    assert (await running.gql(ME, token=org.admin_token))["data"]["me"]
    await running.gql("mutation { logout }", token=org.admin_token)
    refused = await running.gql(ME, token=org.admin_token)
    assert refused["data"] is None and error_code(refused) == "UNAUTHENTICATED"
