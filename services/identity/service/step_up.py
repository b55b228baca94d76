"""Step-up: a signed-in user proves presence again with a fresh TOTP code before something
grave (break-glass). The answer is an assertion identity signs with its token key; whoever acts
on it (secrets) checks it against the same JWKS as access tokens, but under another audience.

Why TOTP only, never a recovery code: recovery codes are for getting back into an account, are
often printed and stored beside the laptop, and are not tied to the moment; a step-up must show
that the holder of the enrolled device is present now. A code is single use across login and
step-up (the user's last accepted time step moves forward), and wrong codes are throttled per
user (5 free, then a growing block) so a stolen access token cannot brute-force 10^6 codes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.auth import (
    ISSUER,
    PURPOSE_BREAK_GLASS_APPROVE,
    PURPOSE_BREAK_GLASS_REQUEST,
    STEP_UP_AUDIENCE,
    STEP_UP_LIFETIME_SECONDS,
    Principal,
)
from doorward_kit.errors import DoorwardError, ErrorCode, bad_input, unauthenticated
from services.identity.repository import Repository
from services.identity.service import mfa
from services.identity.service.identity import ACTIVE, IdentityService, Outcome

PURPOSES = frozenset({PURPOSE_BREAK_GLASS_REQUEST, PURPOSE_BREAK_GLASS_APPROVE})
_BINDING = re.compile(r"^[A-Za-z0-9/_:.-]{1,200}$")


@dataclass(frozen=True)
class StepUpResult:
    assertion: str
    expires_at: int


class StepUps:
    def __init__(self, service: IdentityService) -> None:
        self._service = service

    def _throttle_key(self, user_id: str) -> str:
        digest = hmac.new(
            self._service._throttle_key, f"step-up/{user_id}".encode(), hashlib.sha256
        ).hexdigest()
        return "stepup:" + digest[:60]

    async def verify(
        self, session: AsyncSession, principal: Principal, otp: str, purpose: str, binding: str
    ) -> Outcome[StepUpResult]:
        if purpose not in PURPOSES:
            raise bad_input("unknown step-up purpose")
        if not _BINDING.match(binding or ""):
            raise bad_input("the step-up binding must be a short id-like string")
        service = self._service
        repo = Repository(session)
        user = await repo.user(principal.org_id, principal.user_id, for_update=True)
        if user is None or user.status != ACTIVE:
            raise unauthenticated("this session has ended; log in again")
        key = self._throttle_key(user.id)
        now = service.clock()
        blocked = max((r.blocked_until - now for r in await repo.throttles([key])), default=0.0)
        if blocked > 0:
            return Outcome(
                error=DoorwardError(
                    ErrorCode.RATE_LIMITED,
                    f"too many wrong one-time codes; try again in {int(blocked) + 1} seconds",
                )
            )
        step = None
        if user.mfa_enabled and user.mfa_secret_enc is not None and mfa.looks_like_totp(otp):
            secret = service.secret_box.open(user.id, user.mfa_secret_enc)
            step = mfa.verify_totp(secret, otp, user.mfa_last_step, now)
        if step is None:
            policy = service.throttling
            failures = await repo.count_failure(key, now, policy.failure_window_seconds)
            block = policy.block_for(failures, policy.free_failures_account)
            if block:
                await repo.block(key, now + block)
            reason = "otp" if user.mfa_enabled else "mfa_not_enabled"
            await service._audit_own(
                session, user, "user.step_up", "DENIED", details={"reason": reason, "mode": purpose}
            )
            message = (
                "the one-time code is wrong or was already used"
                if user.mfa_enabled
                else "enable MFA before using break-glass access"
            )
            return Outcome(error=DoorwardError(ErrorCode.FORBIDDEN, message))
        user.mfa_last_step = step
        await repo.clear_throttle(key)
        await service._audit_own(
            session, user, "user.step_up", "ALLOWED", details={"mfa": "totp", "mode": purpose}
        )
        return Outcome(value=self._sign(principal, user.roles, purpose, binding, now))

    def _sign(
        self, principal: Principal, roles: list[str], purpose: str, binding: str, now: float
    ) -> StepUpResult:
        issuer = self._service.issuer
        issued_at = int(now if now else time.time())
        expires_at = issued_at + STEP_UP_LIFETIME_SECONDS
        key = issuer.keys.current(issued_at)
        claims = {
            "iss": ISSUER,
            "aud": STEP_UP_AUDIENCE,
            "sub": principal.user_id,
            "org": principal.org_id,
            # Roles as identity knows them now (not as the access token remembers them).
            "roles": sorted(roles),
            "sid": principal.session_id,
            "purpose": purpose,
            "bind": binding,
            "amr": ["otp"],
            "iat": issued_at,
            "exp": expires_at,
            "jti": str(uuid.uuid4()),
        }
        token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
        return StepUpResult(assertion=token, expires_at=expires_at)
