"""RequestContext.principal(): one token verification (and session check) per request, however
many resolvers ask at once (the 20 entities of a batch used to verify 20 times); a refusal is
every resolver's refusal; a cancelled resolver does not cancel the others' verification."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from doorward_kit.auth import Principal, Role, TokenScope
from doorward_kit.errors import DoorwardError, ErrorCode, unauthenticated
from doorward_kit.graphql import RequestContext

pytestmark = pytest.mark.unit


def principal(scope: TokenScope = TokenScope.FULL) -> Principal:
    return Principal("u1", "o1", frozenset({Role.ADMIN}), frozenset(), "s1", 1, scope)


class SlowVerifier:
    """Counts verifications; each takes a few loop turns, as a session check over gRPC does."""

    def __init__(self, answer: Principal | DoorwardError) -> None:
        self.answer = answer
        self.calls: list[bool] = []

    async def verify(self, token: str | None, *, allow_restricted: bool = False) -> Principal:
        self.calls.append(allow_restricted)
        await asyncio.sleep(0.01)
        if isinstance(self.answer, DoorwardError):
            raise self.answer
        if self.answer.scope is not TokenScope.FULL and not allow_restricted:
            raise DoorwardError(ErrorCode.FORBIDDEN, "restricted")
        return self.answer


def context(verifier: Any) -> RequestContext:
    request = Request({"type": "http", "headers": [(b"authorization", b"Bearer t")]})
    return RequestContext(request=request, verifier=verifier)


async def test_twenty_resolvers_one_verification() -> None:
    verifier = SlowVerifier(principal())
    ctx = context(verifier)
    answers = await asyncio.gather(*(ctx.principal() for _ in range(20)))
    assert verifier.calls == [False]
    assert all(a is answers[0] for a in answers)
    await ctx.principal()  # and afterwards from the request's memory
    assert verifier.calls == [False]


async def test_a_refusal_is_everyones() -> None:
    verifier = SlowVerifier(unauthenticated("this session has ended; log in again"))
    ctx = context(verifier)
    results = await asyncio.gather(*(ctx.principal() for _ in range(5)), return_exceptions=True)
    assert verifier.calls == [False]
    assert all(
        isinstance(r, DoorwardError) and r.code is ErrorCode.UNAUTHENTICATED for r in results
    )


async def test_a_cancelled_resolver_does_not_cancel_the_others() -> None:
    verifier = SlowVerifier(principal())
    ctx = context(verifier)
    first = asyncio.ensure_future(ctx.principal())
    second = asyncio.ensure_future(ctx.principal())
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).user_id == "u1"
    assert verifier.calls == [False]


async def test_a_restricted_token_still_needs_allow_restricted() -> None:
    verifier = SlowVerifier(principal(TokenScope.RESTRICTED))
    ctx = context(verifier)
    assert (await ctx.principal(allow_restricted=True)).scope is TokenScope.RESTRICTED
    with pytest.raises(DoorwardError) as refused:
        await ctx.principal()
    assert refused.value.code is ErrorCode.FORBIDDEN


class CheckingVerifier(SlowVerifier):
    """SlowVerifier with verify_with: the caller's `check` is the session check."""

    def __init__(self, answer: Principal | DoorwardError) -> None:
        super().__init__(answer)
        self.with_calls = 0

    async def verify_with(self, token: str | None, check: Any) -> tuple[Principal, Any]:
        self.with_calls += 1
        if isinstance(self.answer, DoorwardError):
            raise self.answer
        return self.answer, await check(self.answer)


async def test_principal_with_checks_once_and_only_when_nothing_checked_yet() -> None:
    verifier = CheckingVerifier(principal())
    ctx = context(verifier)
    checked: list[Principal] = []

    async def check(p: Principal) -> str:
        checked.append(p)
        return "users"

    who, found = await ctx.principal_with(check)
    assert found == "users" and checked == [who] and verifier.with_calls == 1
    # Afterwards the request's memory: no second check, neither way.
    assert await ctx.principal() is who and verifier.calls == []
    assert await ctx.principal_with(check) == (who, None) and checked == [who]


async def test_principal_with_after_a_verification_does_not_check_again() -> None:
    verifier = CheckingVerifier(principal())
    ctx = context(verifier)
    pending = asyncio.ensure_future(ctx.principal())  # another resolver is verifying
    await asyncio.sleep(0)

    async def check(p: Principal) -> str:
        raise AssertionError("not called")

    who, found = await ctx.principal_with(check)
    assert found is None and who is await pending
    assert verifier.calls == [False] and verifier.with_calls == 0


async def test_principal_with_refused_or_restricted_is_refused() -> None:
    async def check(p: Principal) -> str:
        return "users"

    ended = CheckingVerifier(unauthenticated("this session has ended; log in again"))
    with pytest.raises(DoorwardError) as error:
        await context(ended).principal_with(check)
    assert error.value.code is ErrorCode.UNAUTHENTICATED
    # A restricted principal already in the request's memory does not pass for a full one.
    restricted = CheckingVerifier(principal(TokenScope.RESTRICTED))
    ctx = context(restricted)
    await ctx.principal(allow_restricted=True)

    async def refuse(p: Principal) -> str:
        raise DoorwardError(ErrorCode.FORBIDDEN, "restricted")

    with pytest.raises(DoorwardError) as error:
        await ctx.principal_with(refuse)
    assert error.value.code is ErrorCode.FORBIDDEN
