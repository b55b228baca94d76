"""What `me` and a federated batch of users cost identity in PostgreSQL round trips (issue 11):
the session check and the answer are ONE statement (TokenVerifier.verify_with), with no
transaction around it and no ping of a busy pooled connection; and the session is still
checked on every request: a logged-out, deactivated or superseded token gets nothing, in that
same statement's request, while the honest token keeps working."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.round_trips import simple_statements, statements_of
from tests.fixtures.spans import memory_spans, pseudonym_key_set
from tests.integration.identity.conftest import (
    Org,
    Running,
    create_region,
    create_staff,
    db_of,
    error_code,
)

pytestmark = pytest.mark.integration

ME = "{ me { id displayName regions { id } } }"
USERS = """query($r: [_Any!]!) { _entities(representations: $r) {
  ... on User { id displayName roles } } }"""
# The batch and a field that asks for the caller again: one check per request still.
USERS_WITH_REGIONS = """query($r: [_Any!]!) { _entities(representations: $r) {
  ... on User { id regions { id } } } }"""
DEACTIVATE = 'mutation($id: ID!) { deactivateUser(id: $id, reason: "left") { id } }'


def _reps(*ids: str) -> list[dict[str, str]]:
    return [{"__typename": "User", "id": i} for i in ids]


def _refused_with_nothing(answer: dict[str, Any], *secrets: str) -> None:
    """Refused as UNAUTHENTICATED, and nothing read about the users left in the answer."""
    assert error_code(answer) == "UNAUTHENTICATED", answer
    assert all(e is None for e in (answer.get("data") or {}).get("_entities") or [])
    assert not any(s in str(answer) for s in secrets)


async def test_me_is_one_statement_and_nothing_else(running: Running, org: Org) -> None:
    await running.gql(ME, token=org.admin_token)  # warm: the pool's first checkout is pinged
    with (
        statements_of(db_of(running).engine) as queries,
        simple_statements(db_of(running).engine) as extra,
    ):
        answer = await running.gql(ME, token=org.admin_token)
    assert answer["data"]["me"]["id"] == org.admin_id
    assert len(queries) == 1  # the session check with the user and their regions
    assert "session_families" in queries[0]  # it is the session check
    assert extra == []  # no BEGIN, COMMIT or ping around it


async def test_a_batch_of_users_is_one_query_with_the_session_check(
    running: Running, org: Org
) -> None:
    reps = _reps(org.admin_id, org.admin_id, org.admin_id, "nobody")
    await running.gql(USERS, {"r": reps}, token=org.admin_token)
    with (
        statements_of(db_of(running).engine) as queries,
        simple_statements(db_of(running).engine) as extra,
    ):
        answer = await running.gql(USERS, {"r": reps}, token=org.admin_token)
    found = answer["data"]["_entities"]
    assert [e and e["id"] for e in found] == [org.admin_id] * 3 + [None]
    assert len(queries) == 1 and extra == []
    assert "session_families" in queries[0]
    # The batch reads what a view shows, never a password hash or an MFA secret.
    assert not any("password_hash" in q or "mfa_secret" in q for q in queries)


async def test_a_field_after_the_batch_checks_nothing_twice(running: Running, org: Org) -> None:
    region = await create_region(running, org, "Hot Path North")
    staff = await create_staff(running, org, ["TECHNICIAN"], [region], log_in=False)
    reps = _reps(staff.id, org.admin_id)
    await running.gql(USERS_WITH_REGIONS, {"r": reps}, token=org.admin_token)
    with statements_of(db_of(running).engine) as queries:
        answer = await running.gql(USERS_WITH_REGIONS, {"r": reps}, token=org.admin_token)
    assert "errors" not in answer, answer
    assert answer["data"]["_entities"][0] == {"id": staff.id, "regions": [{"id": region}]}
    # The checked batch, then the regions' own read (no second session check).
    assert sum("session_families" in q for q in queries) == 1


async def test_the_session_is_still_checked_on_every_request(running: Running, org: Org) -> None:
    # The honest token works twice in a row; after logout the same token is refused at once.
    assert (await running.gql(ME, token=org.admin_token))["data"]["me"]
    assert (await running.gql(ME, token=org.admin_token))["data"]["me"]
    await running.gql("mutation { logout }", token=org.admin_token)
    refused = await running.gql(ME, token=org.admin_token)
    assert refused["data"] is None and error_code(refused) == "UNAUTHENTICATED"


async def test_a_batch_under_an_ended_session_gets_no_user(running: Running, org: Org) -> None:
    region = await create_region(running, org, "Hot Path South")
    colleague = await create_staff(running, org, ["DISPATCHER"], [region])
    other = await create_staff(running, org, ["TECHNICIAN"], [region], log_in=False)
    reps = _reps(other.id, colleague.id)
    honest = await running.gql(USERS, {"r": reps}, token=colleague.token)
    assert [e["id"] for e in honest["data"]["_entities"]] == [other.id, colleague.id]
    with pseudonym_key_set(b"h" * 32):
        spans = memory_spans("identity-tests")
        await running.gql("mutation { logout }", token=colleague.token)
        _refused_with_nothing(
            await running.gql(USERS, {"r": reps}, token=colleague.token), "Staff", other.id
        )
    # The refusal is the session check's decision, as the guard's was.
    decisions = [
        s
        for s in spans.get_finished_spans()
        if s.name == "doorward.access.decide"
        and (s.attributes or {}).get("doorward.access.action") == "auth.session.check"
    ]
    assert decisions and (decisions[-1].attributes or {}).get("doorward.decision") == "deny"
    # Another token of the organisation still gets the batch.
    again = await running.gql(USERS, {"r": reps}, token=org.admin_token)
    assert [e["id"] for e in again["data"]["_entities"]] == [other.id, colleague.id]


async def test_a_deactivated_users_batch_and_me_are_refused(running: Running, org: Org) -> None:
    region = await create_region(running, org, "Hot Path East")
    leaver = await create_staff(running, org, ["DISPATCHER"], [region])
    reps = _reps(leaver.id, org.admin_id)
    assert (await running.gql(ME, token=leaver.token))["data"]["me"]["id"] == leaver.id
    assert (await running.gql(USERS, {"r": reps}, token=leaver.token))["data"]["_entities"][0]
    body = await running.gql(DEACTIVATE, {"id": leaver.id}, token=org.admin_token)
    assert body["data"]["deactivateUser"]["id"] == leaver.id, body
    _refused_with_nothing(await running.gql(USERS, {"r": reps}, token=leaver.token), "Staff")
    refused = await running.gql(ME, token=leaver.token)
    assert refused["data"] is None and error_code(refused) == "UNAUTHENTICATED"
    # The admin's own token is untouched.
    assert (await running.gql(ME, token=org.admin_token))["data"]["me"]["id"] == org.admin_id
