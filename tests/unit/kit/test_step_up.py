"""Step-up assertions (identity's VerifyStepUp) from both sides: identity's pass, nothing else,
and they never pass for access tokens (nor access tokens for them)."""

import pytest

from doorward_kit.auth import (
    PURPOSE_BREAK_GLASS_REQUEST,
    Role,
    StaticJwksSource,
    TokenVerifier,
    break_glass_binding,
)
from doorward_kit.errors import DoorwardError
from tests.fixtures.tokens import TestTokenIssuer

pytestmark = pytest.mark.unit

ISSUER = TestTokenIssuer(kid="k1")
VERIFIER = ISSUER.verifier()


def step_up(**overrides):
    values = {
        "user_id": "admin-1",
        "org_id": "org-1",
        "purpose": PURPOSE_BREAK_GLASS_REQUEST,
        "binding": "req-1",
    }
    values.update(overrides)
    return ISSUER.step_up(**values)


async def test_identitys_step_up_verifies():
    verified = await VERIFIER.verify_step_up(step_up())
    assert verified.user_id == "admin-1" and verified.org_id == "org-1"
    assert verified.purpose == PURPOSE_BREAK_GLASS_REQUEST and verified.binding == "req-1"
    assert Role.ADMIN in verified.roles


@pytest.mark.parametrize(
    "assertion",
    [
        "",
        "not-a-jwt",
        TestTokenIssuer(kid="k1").step_up(
            user_id="admin-1", org_id="org-1", purpose="p", binding="b"
        ),  # another key, same kid
        step_up(lifetime=-5),  # expired
        step_up(lifetime=3600),  # lives too long
        ISSUER.token(user_id="admin-1", org_id="org-1", roles=(Role.ADMIN,)),  # access token
    ],
    ids=["empty", "junk", "forged", "expired", "too-long", "access-token"],
)
async def test_anything_else_is_refused(assertion):
    with pytest.raises(DoorwardError) as refused:
        await VERIFIER.verify_step_up(assertion)
    assert refused.value.code.value == "UNAUTHENTICATED"


async def test_a_step_up_is_no_access_token():
    with pytest.raises(DoorwardError):
        await TokenVerifier(StaticJwksSource(ISSUER.jwks), _Guard()).verify(step_up())


class _Guard:
    async def check(self, principal):
        return None


def test_binding_covers_request_secret_job_and_reason_without_the_text():
    base = break_glass_binding("r", "s", "w", "gas leak at the door")
    assert "gas" not in base
    assert base == break_glass_binding("r", "s", "w", "  gas leak at the door ")
    for other in (
        break_glass_binding("r2", "s", "w", "gas leak at the door"),
        break_glass_binding("r", "s2", "w", "gas leak at the door"),
        break_glass_binding("r", "s", "w2", "gas leak at the door"),
        break_glass_binding("r", "s", "w", "routine visit"),
    ):
        assert other != base
