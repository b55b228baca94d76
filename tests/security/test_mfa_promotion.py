"""Issue 10, finding 5: MFA skipped after a promotion.

A user logged in with a full token who is then made ADMIN or AUDITOR (roles the organisation
requires MFA for) must not get a full token from `refresh`: refresh answers like login would,
with `mfaEnrollmentRequired` and a restricted token good only for changePassword, enrollMfa and
confirmMfa. Against the real identity service."""

from __future__ import annotations

import jwt
import pytest

from tests.integration.identity import conftest as identity_fixtures
from tests.integration.identity.conftest import (
    NEW_PASSWORD,
    create_staff,
    error_code,
    login,
    otp_now,
)

pytestmark = pytest.mark.integration

identity_service = identity_fixtures.identity_service
running = identity_fixtures.running
org = identity_fixtures.org

REFRESH = """
mutation($t: String!) {
  refresh(refreshToken: $t) {
    accessToken refreshToken passwordChangeRequired mfaEnrollmentRequired user { roles }
  }
}"""
PROMOTE = """
mutation($id: ID!, $roles: [Role!]!) { updateUser(id: $id, input: {roles: $roles}) { roles } }"""
ENROLL = "mutation { enrollMfa { secret } }"
CONFIRM = "mutation($otp: String!) { confirmMfa(otp: $otp) { recoveryCodes } }"


def scope_of(token: str) -> object:
    claims = jwt.decode(token, options={"verify_signature": False})
    return claims.get("scope")


@pytest.mark.parametrize("role", ["ADMIN", "AUDITOR"])
async def test_refresh_after_promotion_gives_only_a_restricted_token(running, org, role):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    promoted = await running.gql(PROMOTE, {"id": staff.id, "roles": [role]}, token=org.admin_token)
    assert promoted["data"]["updateUser"]["roles"] == [role], promoted
    # The attack: the session started before the promotion asks for a token with the new role.
    body = await running.gql(REFRESH, {"t": staff.refresh_token})
    payload = body["data"]["refresh"]
    assert payload["mfaEnrollmentRequired"] is True
    assert payload["user"]["roles"] == [role]
    restricted = payload["accessToken"]
    for query in ("{ me { id } }", "{ users { id } }", "{ regions { id } }"):
        assert error_code(await running.gql(query, token=restricted)) == "FORBIDDEN", query
    # Refreshing again does not launder the session back to a full one.
    again = (await running.gql(REFRESH, {"t": payload["refreshToken"]}))["data"]["refresh"]
    assert again["mfaEnrollmentRequired"] is True
    assert error_code(await running.gql("{ me { id } }", token=again["accessToken"])) == (
        "FORBIDDEN"
    )
    # The honest way on: enrol with the restricted token, then log in with the code.
    secret = (await running.gql(ENROLL, token=again["accessToken"]))["data"]["enrollMfa"]["secret"]
    confirmed = await running.gql(CONFIRM, {"otp": otp_now(secret)}, token=again["accessToken"])
    assert len(confirmed["data"]["confirmMfa"]["recoveryCodes"]) == 10
    full = (await login(running, staff.email, NEW_PASSWORD, otp_now(secret, offset=30)))["data"][
        "login"
    ]
    assert full["mfaEnrollmentRequired"] is False
    me = await running.gql("{ me { id mfaEnabled } }", token=full["accessToken"])
    assert me["data"]["me"] == {"id": staff.id, "mfaEnabled": True}


async def test_refresh_without_a_promotion_stays_full(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    payload = (await running.gql(REFRESH, {"t": staff.refresh_token}))["data"]["refresh"]
    assert payload["mfaEnrollmentRequired"] is False
    assert payload["passwordChangeRequired"] is False
    me = await running.gql("{ me { id } }", token=payload["accessToken"])
    assert me["data"]["me"] == {"id": staff.id}
    # A promotion to a role without an MFA requirement keeps the session full too.
    promoted = await running.gql(
        PROMOTE, {"id": staff.id, "roles": ["DISPATCHER"]}, token=org.admin_token
    )
    assert "errors" not in promoted, promoted
    after = (await running.gql(REFRESH, {"t": payload["refreshToken"]}))["data"]["refresh"]
    assert after["mfaEnrollmentRequired"] is False
    assert "errors" not in await running.gql("{ me { id } }", token=after["accessToken"])
