"""TokenVerifier from both sides: the tokens identity issues pass; everything else is refused."""

import time
import uuid

import jwt
import pytest

from doorward_kit.auth import (
    AUDIENCE,
    ISSUER,
    Principal,
    Role,
    StaticJwksSource,
    TokenScope,
    TokenVerifier,
    bearer_token,
)
from doorward_kit.errors import DoorwardError, ErrorCode, unauthenticated
from tests.fixtures.tokens import TestTokenIssuer

pytestmark = pytest.mark.unit

ISSUER_KEYS = TestTokenIssuer(kid="k1")


def claims(**overrides):
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "org": "org-1",
        "roles": ["DISPATCHER"],
        "regions": ["r1"],
        "sid": "sid-1",
        "sep": 3,
        "scope": "full",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload, *, kid="k1", key=None, algorithm="EdDSA"):
    return jwt.encode(
        payload, key or ISSUER_KEYS.private_key, algorithm=algorithm, headers={"kid": kid}
    )


class RecordingGuard:
    def __init__(self, refuse=False):
        self.seen: list[Principal] = []
        self.refuse = refuse

    async def check(self, principal):
        self.seen.append(principal)
        if self.refuse:
            raise unauthenticated("this session has ended; log in again")


def verifier(guard=None):
    return TokenVerifier(StaticJwksSource(ISSUER_KEYS.jwks), guard or RecordingGuard())


async def refused(token, code=ErrorCode.UNAUTHENTICATED, **kw):
    with pytest.raises(DoorwardError) as error:
        await verifier().verify(token, **kw)
    assert error.value.code is code
    if token:
        assert token not in error.value.message
    return error.value


async def test_a_good_token_gives_the_principal_and_is_checked_by_the_guard():
    guard = RecordingGuard()
    principal = await verifier(guard).verify(sign(claims()))
    assert principal.user_id == "user-1" and principal.org_id == "org-1"
    assert principal.roles == frozenset({Role.DISPATCHER})
    assert principal.region_ids == frozenset({"r1"})
    assert (principal.session_id, principal.epoch) == ("sid-1", 3)
    assert principal.scope is TokenScope.FULL
    assert guard.seen == [principal]


async def test_the_guard_has_the_last_word():
    with pytest.raises(DoorwardError) as error:
        await verifier(RecordingGuard(refuse=True)).verify(sign(claims()))
    assert error.value.code is ErrorCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c"])
async def test_missing_or_malformed(token):
    await refused(token)


async def test_unknown_key():
    other = TestTokenIssuer(kid="k1")  # same kid, different key
    await refused(sign(claims(), key=other.private_key))
    await refused(sign(claims(), kid="k2"))


async def test_alg_none_and_hmac_confusion():
    await refused(jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"}))
    public_x = ISSUER_KEYS.jwks["keys"][0]["x"].encode()
    await refused(jwt.encode(claims(), public_x, algorithm="HS256", headers={"kid": "k1"}))


async def test_no_kid():
    await refused(jwt.encode(claims(), ISSUER_KEYS.private_key, algorithm="EdDSA"))


async def test_expired_and_too_long_lived():
    now = int(time.time())
    error = await refused(sign(claims(iat=now - 700, exp=now - 100)))
    assert "expired" in error.message
    await refused(sign(claims(iat=now, exp=now + 601)))


@pytest.mark.parametrize(
    "override",
    [{"aud": "someone-else"}, {"iss": "not-identity"}, {"sid": None}, {"sep": None}, {"org": None}],
    ids=["audience", "issuer", "no-sid", "no-sep", "no-org"],
)
async def test_wrong_or_missing_claims(override):
    await refused(sign(claims(**override)))


async def test_unknown_role_is_refused():
    await refused(sign(claims(roles=["SUPERUSER"])))


async def test_restricted_scope_only_where_allowed():
    token = sign(claims(scope="restricted"))
    await refused(token, ErrorCode.FORBIDDEN)
    principal = await verifier().verify(token, allow_restricted=True)
    assert principal.scope is TokenScope.RESTRICTED


def test_bearer_token_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


class CountingJwks(StaticJwksSource):
    def __init__(self) -> None:
        super().__init__(ISSUER_KEYS.jwks)
        self.asked = 0

    async def keys(self, *, refresh=False):
        self.asked += 1
        return await super().keys(refresh=refresh)


async def test_a_token_is_verified_once_and_its_session_checked_every_time():
    jwks, guard = CountingJwks(), RecordingGuard()
    checker = TokenVerifier(jwks, guard)
    token = sign(claims())
    first = await checker.verify(token)
    assert await checker.verify(token) == first
    assert jwks.asked == 1  # the signature was checked once
    assert guard.seen == [first, first]  # the session on every use
    # A logout (the guard says no) refuses the remembered token at once.
    guard.refuse = True
    with pytest.raises(DoorwardError) as error:
        await checker.verify(token)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_a_remembered_token_expires_on_time_and_a_tampered_one_is_verified_afresh():
    now = [time.time()]
    checker = TokenVerifier(
        StaticJwksSource(ISSUER_KEYS.jwks), RecordingGuard(), clock=lambda: now[0]
    )
    token = sign(claims(iat=int(now[0]), exp=int(now[0]) + 60))
    await checker.verify(token)
    # Another signature on the same claims is another string: checked, and refused.
    head, body, _ = token.split(".")
    forged = sign(claims(iat=int(now[0]), exp=int(now[0]) + 60), key=TestTokenIssuer().private_key)
    with pytest.raises(DoorwardError):
        await checker.verify(f"{head}.{body}.{forged.split('.')[2]}")
    now[0] += 61
    with pytest.raises(DoorwardError) as error:
        await checker.verify(token)
    assert "expired" in error.value.message


async def test_a_restricted_token_stays_restricted_when_remembered():
    checker = verifier()
    token = sign(claims(scope="restricted"))
    assert (await checker.verify(token, allow_restricted=True)).scope is TokenScope.RESTRICTED
    with pytest.raises(DoorwardError) as error:
        await checker.verify(token)
    assert error.value.code is ErrorCode.FORBIDDEN


async def test_verify_with_checks_the_token_first_and_lets_the_check_decide_the_session():
    """verify_with (identity: the session check folded into the request's first read) checks
    signature, claims, expiry and scope before `check` runs, never asks the guard (identity's,
    the sessions' source of truth), and its `check` refusing is the caller's refusal."""
    guard = RecordingGuard()
    guard.source_of_truth = True  # type: ignore[attr-defined]
    checker = verifier(guard)
    asked: list[Principal] = []

    async def check(principal):
        asked.append(principal)
        return "read"

    principal, found = await checker.verify_with(sign(claims()), check)
    assert found == "read" and asked == [principal] and principal.user_id == "user-1"
    assert guard.seen == []  # the check was the session check
    # A bad, a foreign-signed, an expired or a restricted token never reaches the check.
    forged = sign(claims(), key=TestTokenIssuer(kid="k1").private_key)
    expired = sign(claims(iat=int(time.time()) - 400, exp=int(time.time()) - 100))
    for token in (None, "garbage", forged, expired):
        with pytest.raises(DoorwardError) as error:
            await checker.verify_with(token, check)
        assert error.value.code is ErrorCode.UNAUTHENTICATED
    with pytest.raises(DoorwardError) as error:
        await checker.verify_with(sign(claims(scope="restricted")), check)
    assert error.value.code is ErrorCode.FORBIDDEN
    assert asked == [principal]

    async def ended(principal):
        raise unauthenticated("this session has ended; log in again")

    with pytest.raises(DoorwardError) as error:
        await checker.verify_with(sign(claims()), ended)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_verify_with_never_hands_another_guards_check_to_the_caller():
    """With a guard that is not the sessions' source of truth (a remote check, a cache), the
    guard still checks first: a `check` that only reads cannot skip a logout."""
    guard = RecordingGuard(refuse=True)
    checker = verifier(guard)
    asked: list[Principal] = []

    async def read_only(principal):
        asked.append(principal)
        return "read"

    with pytest.raises(DoorwardError) as error:
        await checker.verify_with(sign(claims()), read_only)
    assert error.value.code is ErrorCode.UNAUTHENTICATED and asked == []
    guard.refuse = False
    principal, found = await checker.verify_with(sign(claims()), read_only)
    assert found == "read" and guard.seen[-1] == principal and asked == [principal]
