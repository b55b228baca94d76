"""Every user may read their OWN User.accessHistory (transparency; the GDPR right of access to
their own records) and nothing else of the trail; someone else's history stays FORBIDDEN for
everybody but AUDITOR and ADMIN, through `_entities` as through nested fields."""

import uuid

import pytest

from doorward_kit.auth import Role
from tests.integration.audit.harness import record, running_audit

pytestmark = pytest.mark.integration

HISTORY = """
query($reps: [_Any!]!) {
  _entities(representations: $reps) {
    ... on User { id accessHistory { seq action outcome actor { id } } }
  }
}
"""

NESTED = """
query($reps: [_Any!]!) {
  _entities(representations: $reps) {
    ... on User { id accessHistory { seq workOrder { id auditTrail { seq } } } }
  }
}
"""

FIELD_ROLES = [Role.TECHNICIAN, Role.SUBCONTRACTOR, Role.DISPATCHER]


@pytest.fixture(scope="module")
async def audit(postgres):
    async with running_audit(postgres) as harness:
        yield harness


@pytest.fixture(scope="module")
async def people(audit):
    me, colleague = str(uuid.uuid4()), str(uuid.uuid4())
    work_order = str(uuid.uuid4())
    await audit.append(
        [record(actor_id=me, action="customer.contact.read", work_order_id=work_order)
         for _ in range(3)]
        + [record(actor_id=colleague, action="secret.reveal", work_order_id=work_order)
           for _ in range(2)]
    )
    # The same user id in another organisation: never part of org-1's answer.
    await audit.append([record(org_id="org-2", actor_id=me)])
    return {"me": me, "colleague": colleague, "work_order": work_order}


def _user(user_id: str) -> dict[str, str]:
    return {"__typename": "User", "id": user_id}


@pytest.mark.parametrize("role", list(Role))
async def test_everybody_reads_their_own_history(audit, people, role):
    token = audit.token(roles=[role], user_id=people["me"])
    body = await audit.graphql(HISTORY, token, {"reps": [_user(people["me"])]})
    assert not body.get("errors"), body
    (user,) = body["data"]["_entities"]
    history = user["accessHistory"]
    assert len(history) == 3  # not the colleague's, not org-2's
    assert {e["action"] for e in history} == {"customer.contact.read"}
    assert {e["actor"]["id"] for e in history} == {people["me"]}
    assert [e["seq"] for e in history] == sorted(e["seq"] for e in history)


@pytest.mark.parametrize("role", FIELD_ROLES)
async def test_someone_elses_history_is_forbidden(audit, people, role):
    token = audit.token(roles=[role], user_id=people["me"])
    body = await audit.graphql(HISTORY, token, {"reps": [_user(people["colleague"])]})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert not any(item for item in (body.get("data") or {}).get("_entities") or [])


@pytest.mark.parametrize("role", FIELD_ROLES)
async def test_own_and_someone_elses_in_one_request(audit, people, role):
    token = audit.token(roles=[role], user_id=people["me"])
    reps = [_user(people["me"]), _user(people["colleague"])]
    body = await audit.graphql(HISTORY, token, {"reps": reps})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert body["errors"][0]["path"] == ["_entities", 1]
    mine, theirs = body["data"]["_entities"]
    assert len(mine["accessHistory"]) == 3
    assert theirs is None


@pytest.mark.parametrize("role", FIELD_ROLES)
async def test_own_history_opens_nothing_else_of_the_trail(audit, people, role):
    token = audit.token(roles=[role], user_id=people["me"])
    # The work order's trail (the colleague's reveals are on it) stays FORBIDDEN.
    body = await audit.graphql(NESTED, token, {"reps": [_user(people["me"])]})
    assert body["errors"] and {e["extensions"]["code"] for e in body["errors"]} == {"FORBIDDEN"}
    assert "secret.reveal" not in str(body.get("data"))
    reps = [{"__typename": "WorkOrder", "id": people["work_order"]}]
    body = await audit.graphql(
        "query($reps: [_Any!]!) { _entities(representations: $reps) "
        "{ ... on WorkOrder { auditTrail { seq } } } }",
        token,
        {"reps": reps},
    )
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    for query in (
        "{ auditEvents(first: 5) { edges { node { id } } } }",
        '{ auditEvents(actorId: "' + people["me"] + '") { edges { node { id } } } }',
        "{ auditIntegrity { ok } }",
    ):
        body = await audit.graphql(query, token)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
async def test_audit_readers_still_read_everyones(audit, people, role):
    token = audit.token(roles=[role])
    reps = [_user(people["me"]), _user(people["colleague"])]
    body = await audit.graphql(HISTORY, token, {"reps": reps})
    assert not body.get("errors"), body
    assert [len(u["accessHistory"]) for u in body["data"]["_entities"]] == [3, 2]


async def test_own_history_of_another_organisation_is_that_organisations(audit, people):
    # Same user id, other org in the token: org-2's one event, never org-1's three.
    token = audit.token(org_id="org-2", roles=[Role.TECHNICIAN], user_id=people["me"])
    body = await audit.graphql(HISTORY, token, {"reps": [_user(people["me"])]})
    assert len(body["data"]["_entities"][0]["accessHistory"]) == 1


async def test_no_token_is_unauthenticated(audit, people):
    body = await audit.graphql(HISTORY, None, {"reps": [_user(people["me"])]})
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
