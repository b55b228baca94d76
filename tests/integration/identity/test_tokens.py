import time
import uuid

import httpx
import jwt
import pytest

from doorward_kit.auth import AUDIENCE, ISSUER, TokenScope
from services.identity.service.tokens import AccessTokenIssuer
from tests.fixtures.tokens import TestTokenIssuer
from tests.integration.identity.conftest import create_staff, error_code

pytestmark = pytest.mark.integration

ME = "{ me { id } }"
REFRESH = """
mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken user { id } } }"""


async def test_refresh_rotates_and_reuse_ends_the_whole_family(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    first = await running.gql(REFRESH, {"t": staff.refresh_token})
    rotated = first["data"]["refresh"]
    assert rotated["user"]["id"] == staff.id
    assert rotated["refreshToken"] != staff.refresh_token
    assert (await running.gql(ME, token=rotated["accessToken"]))["data"]["me"]["id"] == staff.id

    # The old refresh token comes back (a thief replaying it): the family ends.
    reuse = await running.gql(REFRESH, {"t": staff.refresh_token})
    assert error_code(reuse) == "UNAUTHENTICATED"
    assert staff.refresh_token not in str(reuse)
    assert (
        error_code(await running.gql(REFRESH, {"t": rotated["refreshToken"]})) == "UNAUTHENTICATED"
    )
    # And the access tokens of that family are refused too (sid of an ended family).
    assert error_code(await running.gql(ME, token=rotated["accessToken"])) == "UNAUTHENTICATED"
    assert error_code(await running.gql(ME, token=staff.token)) == "UNAUTHENTICATED"


async def test_garbage_refresh_token_is_refused(running):
    assert error_code(await running.gql(REFRESH, {"t": "dwr_not-a-token"})) == "UNAUTHENTICATED"


async def test_logout_ends_the_session_and_its_access_token(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    assert (await running.gql(ME, token=staff.token))["data"]["me"]["id"] == staff.id
    out = await running.gql("mutation { logout }", token=staff.token)
    assert out["data"]["logout"] is True
    assert error_code(await running.gql(ME, token=staff.token)) == "UNAUTHENTICATED"
    assert error_code(await running.gql(REFRESH, {"t": staff.refresh_token})) == "UNAUTHENTICATED"


def _claims(staff_id: str, org_id: str, sid: str = "x", **extra):
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": staff_id,
        "org": org_id,
        "roles": ["ADMIN"],
        "regions": [],
        "sid": sid,
        "sep": 0,
        "scope": "full",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        **extra,
    }


async def test_token_signed_by_an_unknown_key_is_refused(running, org):
    foreign = TestTokenIssuer(kid="attacker-key").token(
        user_id=org.admin_id, org_id=org.id, roles=["ADMIN"]
    )
    assert error_code(await running.gql(ME, token=foreign)) == "UNAUTHENTICATED"


async def test_alg_none_is_refused(running, org):
    kid = running.identity.keys.current().kid
    unsigned = jwt.encode(
        _claims(org.admin_id, org.id), key=None, algorithm="none", headers={"kid": kid}
    )
    assert error_code(await running.gql(ME, token=unsigned)) == "UNAUTHENTICATED"
    # Also the classic trick: the header says none, a signature-looking tail is appended.
    assert error_code(await running.gql(ME, token=unsigned + "c2ln")) == "UNAUTHENTICATED"


async def test_expired_token_is_refused(running, org):
    issuer = AccessTokenIssuer(running.identity.keys, 60)
    token, _ = issuer.issue(
        user_id=org.admin_id,
        org_id=org.id,
        roles=["ADMIN"],
        region_ids=[],
        session_id=str(uuid.uuid4()),
        epoch=0,
        scope=TokenScope.FULL,
        now=time.time() - 3600,
    )
    body = await running.gql(ME, token=token)
    assert error_code(body) == "UNAUTHENTICATED"
    assert "expired" in body["errors"][0]["message"]


async def test_token_for_another_organisation_is_refused(running, org):
    # Signed by identity's own key, but the org claim does not match the user: CheckSession
    # knows no such user in that org.
    other_org = str(uuid.uuid4())
    key = running.identity.keys.current()
    forged = jwt.encode(
        _claims(org.admin_id, other_org),
        key.private_key,
        algorithm="EdDSA",
        headers={"kid": key.kid},
    )
    assert error_code(await running.gql(ME, token=forged)) == "UNAUTHENTICATED"


async def test_a_real_token_of_one_org_sees_nothing_of_another(running, org):
    from tests.integration.identity.conftest import new_org

    rival = await new_org(running)
    user = await running.gql(
        "query($id: ID!) { user(id: $id) { id } }", {"id": org.admin_id}, token=rival.admin_token
    )
    assert error_code(user) == "NOT_FOUND"
    listed = await running.gql("{ users { id } }", token=rival.admin_token)
    assert [u["id"] for u in listed["data"]["users"]] == [rival.admin_id]
    entity = await running.gql(
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id email } } }",
        {"r": [{"__typename": "User", "id": org.admin_id}]},
        token=rival.admin_token,
    )
    assert entity["data"]["_entities"] == [None]


async def test_no_token_no_data(running, org):
    assert error_code(await running.gql(ME)) == "UNAUTHENTICATED"
    entity = await running.gql(
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id email } } }",
        {"r": [{"__typename": "User", "id": org.admin_id}]},
    )
    assert error_code(entity) == "UNAUTHENTICATED"
    assert org.admin_email not in str(entity)


async def test_jwks_endpoint_and_rotation_keep_old_tokens_valid(running, org):
    async with httpx.AsyncClient() as client:
        before = (await client.get(running.http_url + "/.well-known/jwks.json")).json()
    assert all("d" not in key for key in before["keys"])
    old_kid = running.identity.keys.current().kid
    assert old_kid in {k["kid"] for k in before["keys"]}
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    assert jwt.get_unverified_header(staff.token)["kid"] == old_kid

    ring = running.identity.keys
    saved = ring.prepublish
    ring.prepublish = 0
    try:
        new_key = ring.rotate(now=time.time() + 1)
    finally:
        ring.prepublish = saved
    async with httpx.AsyncClient() as client:
        after = (await client.get(running.http_url + "/.well-known/jwks.json")).json()
    kids = {k["kid"] for k in after["keys"]}
    assert {old_kid, new_key.kid} <= kids
    # Nobody is logged out: the token signed by the previous key still works.
    assert (await running.gql(ME, token=staff.token))["data"]["me"]["id"] == staff.id
