import pytest

from doorward_kit.errors import DoorwardError, ErrorCode
from services.identity.bootstrap import bootstrap
from tests.integration.identity.conftest import (
    ADMIN_PASSWORD,
    CREATE_USER,
    create_region,
    create_staff,
    error_code,
    eventually,
)

pytestmark = pytest.mark.integration

USERS = "query($r: ID, $role: Role) { users(regionId: $r, role: $role) { id regions { id name } } }"
USER = "query($id: ID!) { user(id: $id) { id email regions { id } } }"
ENTITIES = """
query($r: [_Any!]!) {
  _entities(representations: $r) { ... on User { id email } ... on Region { id name } }
}"""


@pytest.fixture
async def london_manchester(running, org):
    london = await create_region(running, org, "London")
    manchester = await create_region(running, org, "Manchester")
    ldn_dispatcher = await create_staff(running, org, ["DISPATCHER"], [london])
    ldn_tech = await create_staff(running, org, ["TECHNICIAN"], [london])
    mcr_tech = await create_staff(running, org, ["TECHNICIAN"], [manchester])
    both = await create_staff(running, org, ["TECHNICIAN"], [london, manchester], log_in=False)
    return london, manchester, ldn_dispatcher, ldn_tech, mcr_tech, both


async def test_london_dispatcher_sees_no_manchester_user(running, org, london_manchester):
    london, manchester, dispatcher, ldn_tech, mcr_tech, both = london_manchester
    listed = (await running.gql(USERS, token=dispatcher.token))["data"]["users"]
    ids = {u["id"] for u in listed}
    assert {dispatcher.id, ldn_tech.id, both.id} <= ids
    assert mcr_tech.id not in ids and org.admin_id not in ids
    # A colleague who also works Manchester shows only the region the dispatcher holds.
    colleague = next(u for u in listed if u["id"] == both.id)
    assert colleague["regions"] == [{"id": london, "name": "London"}]
    asked = await running.gql(USERS, {"r": manchester}, token=dispatcher.token)
    assert asked["data"]["users"] == []
    direct = await running.gql(USER, {"id": mcr_tech.id}, token=dispatcher.token)
    assert error_code(direct) == "NOT_FOUND"
    assert direct.get("data", {}).get("user") is None
    entities = await running.gql(
        ENTITIES,
        {
            "r": [
                {"__typename": "User", "id": mcr_tech.id},
                {"__typename": "Region", "id": manchester},
            ]
        },
        token=dispatcher.token,
    )
    assert entities["data"]["_entities"] == [None, None]
    regions = (await running.gql("{ regions { name } }", token=dispatcher.token))["data"]["regions"]
    assert regions == [{"name": "London"}]
    # The other side: the London user is visible to them, by id and through _entities.
    seen = await running.gql(USER, {"id": ldn_tech.id}, token=dispatcher.token)
    assert seen["data"]["user"]["id"] == ldn_tech.id
    entity = await running.gql(
        ENTITIES, {"r": [{"__typename": "User", "id": ldn_tech.id}]}, token=dispatcher.token
    )
    assert entity["data"]["_entities"][0]["id"] == ldn_tech.id
    # One batch of mixed references keeps their order, answers the visible ones and hides the
    # others, exactly as one by one.
    batch = await running.gql(
        ENTITIES,
        {
            "r": [
                {"__typename": "User", "id": ldn_tech.id},
                {"__typename": "User", "id": mcr_tech.id},
                {"__typename": "User", "id": dispatcher.id},
                {"__typename": "User", "id": ldn_tech.id},
            ]
        },
        token=dispatcher.token,
    )
    assert [e and e["id"] for e in batch["data"]["_entities"]] == [
        ldn_tech.id,
        None,
        dispatcher.id,
        ldn_tech.id,
    ]


async def test_admin_sees_the_whole_org(running, org, london_manchester):
    _, manchester, dispatcher, _, mcr_tech, _ = london_manchester
    listed = (await running.gql(USERS, {"r": manchester}, token=org.admin_token))["data"]["users"]
    assert mcr_tech.id in {u["id"] for u in listed}
    techs = (await running.gql(USERS, {"role": "TECHNICIAN"}, token=org.admin_token))["data"][
        "users"
    ]
    assert dispatcher.id not in {u["id"] for u in techs}


async def test_technician_sees_only_themself(running, org, london_manchester):
    london, _, dispatcher, ldn_tech, _, _ = london_manchester
    listed = (await running.gql(USERS, token=ldn_tech.token))["data"]["users"]
    assert [u["id"] for u in listed] == [ldn_tech.id]
    assert (
        error_code(await running.gql(USER, {"id": dispatcher.id}, token=ldn_tech.token))
        == "NOT_FOUND"
    )
    me = await running.gql(USER, {"id": ldn_tech.id}, token=ldn_tech.token)
    assert me["data"]["user"]["regions"] == [{"id": london}]


async def test_only_admins_administer_and_refusals_are_audited(running, org, london_manchester):
    london, _, dispatcher, ldn_tech, _, _ = london_manchester
    create = await running.gql(
        CREATE_USER,
        {
            "input": {
                "email": "sneaky@example.com",
                "displayName": "Sneaky",
                "roles": ["ADMIN"],
                "regionIds": [london],
                "initialPassword": "Sneaky-Initial-Passphrase",
            }
        },
        token=dispatcher.token,
    )
    assert error_code(create) == "FORBIDDEN"
    deactivate = await running.gql(
        'mutation($id: ID!) { deactivateUser(id: $id, reason: "x") { id } }',
        {"id": ldn_tech.id},
        token=dispatcher.token,
    )
    assert error_code(deactivate) == "FORBIDDEN"
    region = await running.gql(
        'mutation { createRegion(name: "Leeds") { id } }', token=ldn_tech.token
    )
    assert error_code(region) == "FORBIDDEN"
    await eventually(lambda: running.audit.of("user.deactivate", org.id))
    denied = running.audit.of("user.deactivate", org.id)[0]
    assert denied.actor_id == dispatcher.id and denied.target_id == ldn_tech.id
    assert denied.outcome == 2  # DENIED
    await eventually(lambda: running.audit.of("user.create", org.id))


async def test_role_change_kills_old_tokens_and_is_audited(running, org, london_manchester):
    _london, manchester, _dispatcher, ldn_tech, _, _ = london_manchester
    update = await running.gql(
        """mutation($id: ID!, $r: [ID!]) {
          updateUser(id: $id, input: {regionIds: $r, roles: [DISPATCHER]}) {
            id roles regions { id }
          }
        }""",
        {"id": ldn_tech.id, "r": [manchester]},
        token=org.admin_token,
    )
    assert update["data"]["updateUser"]["roles"] == ["DISPATCHER"]
    assert update["data"]["updateUser"]["regions"] == [{"id": manchester}]
    # The old token carried TECHNICIAN/London: it must not outlive the change.
    assert error_code(await running.gql("{ me { id } }", token=ldn_tech.token)) == "UNAUTHENTICATED"
    # Refresh gives a token with the new claims.
    refreshed = await running.gql(
        "mutation($t: String!) { refresh(refreshToken: $t) { accessToken } }",
        {"t": ldn_tech.refresh_token},
    )
    import jwt

    claims = jwt.decode(
        refreshed["data"]["refresh"]["accessToken"], options={"verify_signature": False}
    )
    assert claims["roles"] == ["DISPATCHER"] and claims["regions"] == [manchester]
    await eventually(lambda: running.audit.of("user.roles.change", org.id))
    await eventually(lambda: running.audit.of("user.regions.change", org.id))
    event = running.audit.of("user.roles.change", org.id)[0]
    assert (
        event.details["roles"] == "DISPATCHER" and event.details["previous_roles"] == "TECHNICIAN"
    )


async def test_admin_cannot_lock_themself_out(running, org):
    body = await running.gql(
        'mutation($id: ID!) { deactivateUser(id: $id, reason: "oops") { id } }',
        {"id": org.admin_id},
        token=org.admin_token,
    )
    assert error_code(body) == "BAD_USER_INPUT"
    body = await running.gql(
        "mutation($id: ID!) { updateUser(id: $id, input: {roles: [AUDITOR]}) { id } }",
        {"id": org.admin_id},
        token=org.admin_token,
    )
    assert error_code(body) == "BAD_USER_INPUT"


async def test_input_validation(running, org):
    await create_region(running, org, "Bristol")
    dup = await running.gql(
        'mutation { createRegion(name: "Bristol") { id } }', token=org.admin_token
    )
    assert error_code(dup) == "CONFLICT"
    for bad in (
        {
            "email": "not-an-email",
            "roles": ["TECHNICIAN"],
            "regionIds": [],
            "initialPassword": "Fine-Passphrase-123",
        },
        {
            "email": "ok@example.com",
            "roles": [],
            "regionIds": [],
            "initialPassword": "Fine-Passphrase-123",
        },
        {
            "email": "ok@example.com",
            "roles": ["TECHNICIAN"],
            "regionIds": ["nope"],
            "initialPassword": "Fine-Passphrase-123",
        },
        {
            "email": "ok@example.com",
            "roles": ["TECHNICIAN"],
            "regionIds": [],
            "initialPassword": "password",
        },
    ):
        body = await running.gql(
            CREATE_USER, {"input": {"displayName": "X", **bad}}, token=org.admin_token
        )
        assert error_code(body) == "BAD_USER_INPUT", body
    taken = await running.gql(
        CREATE_USER,
        {
            "input": {
                "email": org.admin_email.upper(),
                "displayName": "X",
                "roles": ["TECHNICIAN"],
                "regionIds": [],
                "initialPassword": "Fine-Passphrase-123",
            }
        },
        token=org.admin_token,
    )
    assert error_code(taken) == "CONFLICT"


async def test_bootstrap_refuses_to_run_twice(running, org):
    with pytest.raises(DoorwardError) as refused:
        await bootstrap(
            running.identity.db,
            org.name,
            "second-admin@example.com",
            ADMIN_PASSWORD,
            settings=running.settings,
            migrate=False,
        )
    assert refused.value.code is ErrorCode.CONFLICT


async def test_bootstrap_gives_working_recovery_codes(running):
    import uuid

    from tests.integration.identity.conftest import login

    email = f"boot-{uuid.uuid4().hex[:8]}@example.com"
    result = await bootstrap(
        running.identity.db,
        f"org-{uuid.uuid4().hex[:8]}",
        email,
        ADMIN_PASSWORD,
        settings=running.settings,
        migrate=False,
    )
    assert result.totp_secret and len(result.recovery_codes) == 10
    body = await login(running, email, ADMIN_PASSWORD, result.recovery_codes[3])
    assert body["data"]["login"]["user"]["id"] == result.user_id


async def test_auditor_must_enrol_mfa_then_reads_the_whole_org_but_administers_nothing(
    running, org, london_manchester
):
    from tests.integration.identity.conftest import NEW_PASSWORD, login, otp_now

    _, _, dispatcher, _, mcr_tech, _ = london_manchester
    auditor = await create_staff(running, org, ["AUDITOR"], [])
    first = (await login(running, auditor.email, NEW_PASSWORD))["data"]["login"]
    assert first["mfaEnrollmentRequired"] is True
    restricted = first["accessToken"]
    secret = (await running.gql("mutation { enrollMfa { secret } }", token=restricted))["data"][
        "enrollMfa"
    ]["secret"]
    confirm = await running.gql(
        "mutation($o: String!) { confirmMfa(otp: $o) { recoveryCodes } }",
        {"o": otp_now(secret)},
        token=restricted,
    )
    assert len(confirm["data"]["confirmMfa"]["recoveryCodes"]) == 10
    full = (await login(running, auditor.email, NEW_PASSWORD, otp_now(secret, offset=30)))["data"][
        "login"
    ]
    assert full["mfaEnrollmentRequired"] is False
    ids = {u["id"] for u in (await running.gql(USERS, token=full["accessToken"]))["data"]["users"]}
    assert {dispatcher.id, mcr_tech.id, org.admin_id} <= ids
    refused = await running.gql(
        'mutation { createRegion(name: "Audit Land") { id } }', token=full["accessToken"]
    )
    assert error_code(refused) == "FORBIDDEN"
