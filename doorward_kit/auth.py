"""Who is calling: access-token verification shared by the gateway and every service.

Access tokens are EdDSA JWTs issued by identity (header `kid`, at most 10 minutes). Claims:
  iss="doorward-identity", aud="doorward", sub=user id, org=organisation id, roles=[Role],
  regions=[region id], sid=session family id, sep=user session epoch, scope="full"|"restricted",
  iat, exp, jti.
Signature and claims are checked locally against identity's JWKS; then a SessionGuard asks
whether the user's session epoch is still current, which is how a deactivation reaches every
process immediately.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx
import jwt
from jwt import PyJWK
from opentelemetry import trace

from doorward_kit.errors import DoorwardError, ErrorCode, unauthenticated

ISSUER = "doorward-identity"
AUDIENCE = "doorward"
ALGORITHMS = ["EdDSA"]
MAX_TOKEN_LIFETIME_SECONDS = 600
# Step-up assertions (identity's VerifyStepUp): proof that a user typed a fresh one-time code.
STEP_UP_AUDIENCE = "doorward-step-up"
STEP_UP_LIFETIME_SECONDS = 900
PURPOSE_BREAK_GLASS_REQUEST = "break_glass.request"
PURPOSE_BREAK_GLASS_APPROVE = "break_glass.approve"

T = TypeVar("T")


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    DISPATCHER = "DISPATCHER"
    TECHNICIAN = "TECHNICIAN"
    SUBCONTRACTOR = "SUBCONTRACTOR"
    AUDITOR = "AUDITOR"


class TokenScope(enum.StrEnum):
    FULL = "full"
    # Password change or MFA enrolment pending: only changePassword / enrollMfa / confirmMfa.
    RESTRICTED = "restricted"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    org_id: str
    roles: frozenset[Role]
    region_ids: frozenset[str]
    session_id: str
    epoch: int
    scope: TokenScope = TokenScope.FULL
    expires_at: float = 0.0
    token: str = field(default="", repr=False, compare=False)

    def has_role(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)

    def holds_region(self, region_id: str | None) -> bool:
        return region_id is not None and region_id in self.region_ids

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


@dataclass(frozen=True, slots=True)
class StepUp:
    """A verified step-up assertion: `user_id` proved presence for `purpose` on `binding`."""

    user_id: str
    org_id: str
    roles: frozenset[Role]
    purpose: str
    binding: str
    assertion_id: str
    expires_at: float


def break_glass_binding(
    request_id: str, secret_ref_id: str, work_order_id: str, reason: str
) -> str:
    """What a requester's break-glass step-up is bound to: this request, secret, job and reason
    (as a digest: free text never goes into a token)."""
    digest = hashlib.sha256(reason.strip().encode()).hexdigest()[:32]
    return f"{request_id}/{secret_ref_id}/{work_order_id}/{digest}"


class SessionGuard(Protocol):
    """Raises UNAUTHENTICATED when the principal's session epoch is no longer current."""

    async def check(self, principal: Principal) -> None: ...


class NoSessionGuard:
    """For unit tests of pure logic only; real processes use identity's guard."""

    async def check(self, principal: Principal) -> None:
        return None


class JwksSource(Protocol):
    async def keys(self, *, refresh: bool = False) -> dict[str, PyJWK]: ...


class HttpJwksSource:
    """identity's JWKS over HTTP, cached; refetched on an unknown kid (at most every 5 s)."""

    def __init__(self, url: str | Sequence[str], *, ttl: float = 300.0) -> None:
        # Several URLs: identity's replicas, tried in turn until one answers.
        self._urls = [url] if isinstance(url, str) else list(url)
        self._ttl = ttl
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def keys(self, *, refresh: bool = False) -> dict[str, PyJWK]:
        now = time.monotonic()
        stale = now - self._fetched_at > self._ttl
        may_refresh = now - self._fetched_at > 5.0
        if self._keys and not stale and not (refresh and may_refresh):
            return self._keys
        async with self._lock:
            if self._fetched_at and time.monotonic() - self._fetched_at < 1.0 and self._keys:
                return self._keys
            document = await self._fetch()
            if document is None:
                if self._keys:
                    return self._keys
                raise DoorwardError(
                    ErrorCode.UNAVAILABLE, "identity's signing keys cannot be fetched"
                )
            self._keys = parse_jwks(document)
            self._fetched_at = time.monotonic()
            return self._keys

    async def _fetch(self) -> Any | None:
        async with httpx.AsyncClient(timeout=3.0) as client:
            for url in self._urls:
                try:
                    response = await client.get(url)
                    response.raise_for_status()
                    return response.json()
                except (httpx.HTTPError, ValueError):
                    continue  # the next replica
        return None


class StaticJwksSource:
    def __init__(self, document: dict[str, Any]) -> None:
        self._keys = parse_jwks(document)

    async def keys(self, *, refresh: bool = False) -> dict[str, PyJWK]:
        return self._keys


def parse_jwks(document: dict[str, Any]) -> dict[str, PyJWK]:
    keys: dict[str, PyJWK] = {}
    for entry in document.get("keys", []):
        kid = entry.get("kid")
        if kid and entry.get("kty") == "OKP":
            keys[kid] = PyJWK(entry, algorithm="EdDSA")
    return keys


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


# Access tokens whose signature and claims this process has verified, by their exact text.
MAX_VERIFIED_TOKENS = 10_000


class TokenVerifier:
    """Signature and claims of an access token, then the session guard on every call.

    A token's signature and claims are checked once per process: decoding one (PyJWT's
    base64 checks, the header parsed twice, an Ed25519 verification) cost more than most of a
    subgraph's answer, and the gateway and every subgraph a request reaches verify the same
    token again. A token seen before is the same string, already verified, and only its
    expiry can change: that is checked on every use, and so is its session (the guard), so a
    logout or a deactivation still takes effect at once. Only verified tokens are remembered
    (a stranger cannot fill the memory with junk); at most MAX_VERIFIED_TOKENS, oldest out.
    A token signed by a key that is later withdrawn from the JWKS stays good until its expiry
    (at most ten minutes), as it would in any process that cached the JWKS."""

    def __init__(
        self, jwks: JwksSource, guard: SessionGuard, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._jwks = jwks
        self._guard = guard
        self._clock = clock
        self._verified: dict[str, Principal] = {}

    async def verify(self, token: str | None, *, allow_restricted: bool = False) -> Principal:
        principal = await self._usable(token, allow_restricted)
        await self._guard.check(principal)
        _name_org(principal)
        return principal

    async def verify_with(
        self,
        token: str | None,
        check: Callable[[Principal], Awaitable[T]],
        *,
        allow_restricted: bool = False,
    ) -> tuple[Principal, T]:
        """verify(), with the session check done by `check` instead of the guard, and what
        `check` answers. For identity, the sessions' source of truth: its check is a read of
        its own database, and `check` does it in the same statement as the request's first
        read (a batch of users), one round trip instead of two. `check` must raise
        UNAUTHENTICATED when the principal's session is not current, exactly as the guard
        would; nothing it read may be used then (it raises, so nothing is returned). The
        signature, claims, expiry and scope are checked first, as by verify().

        Only a guard that is the sessions' source of truth (`source_of_truth = True`: identity's
        own) hands its check over; with any other guard (a remote check, a cache) the guard
        checks first and `check` only reads, so no caller can swap the real check away."""
        principal = await self._usable(token, allow_restricted)
        if not getattr(self._guard, "source_of_truth", False):
            await self._guard.check(principal)
        found = await check(principal)
        _name_org(principal)
        return principal, found

    async def _usable(self, token: str | None, allow_restricted: bool) -> Principal:
        """Everything verify() checks but the session: signature, claims, expiry, scope."""
        if not token:
            raise unauthenticated()
        principal = await self.decode(token)
        if principal.scope is TokenScope.RESTRICTED and not allow_restricted:
            raise DoorwardError(
                ErrorCode.FORBIDDEN,
                "change your password or finish MFA enrolment, then log in again",
            )
        return principal

    async def _signing_key(self, token: str, what: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthenticated(f"the {what} is malformed") from None
        if header.get("alg") not in ALGORITHMS:
            raise unauthenticated(f"the {what}'s algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise unauthenticated(f"the {what} names no signing key")
        keys = await self._jwks.keys()
        if kid not in keys:
            keys = await self._jwks.keys(refresh=True)
        key = keys.get(kid)
        if key is None:
            raise unauthenticated(f"the {what} was signed by an unknown key")
        return key.key

    async def decode(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if self._clock() < known.expires_at:  # PyJWT's rule: good while now < exp
                return known
            del self._verified[token]
            raise unauthenticated("the access token has expired")
        principal = await self._decode(token)
        if len(self._verified) >= MAX_VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = principal
        return principal

    async def _decode(self, token: str) -> Principal:
        key = await self._signing_key(token, "access token")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "org", "sid", "sep"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("the access token has expired") from None
        except jwt.PyJWTError:
            raise unauthenticated("the access token is invalid") from None
        if int(claims["exp"]) - int(claims["iat"]) > MAX_TOKEN_LIFETIME_SECONDS:
            raise unauthenticated("the access token lives too long")
        return principal_from_claims(claims, token)

    async def verify_step_up(self, assertion: str) -> StepUp:
        """A step-up assertion identity signed after checking a fresh one-time code (see
        identity's VerifyStepUp). Another audience than access tokens: neither passes for the
        other. The caller still checks purpose, binding and whose it is."""
        if not assertion or len(assertion) > 4096:
            raise unauthenticated("a step-up assertion is required")
        key = await self._signing_key(assertion, "step-up assertion")
        try:
            claims = jwt.decode(
                assertion,
                key=key,
                algorithms=ALGORITHMS,
                audience=STEP_UP_AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "org", "purpose", "bind", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("the step-up assertion has expired") from None
        except jwt.PyJWTError:
            raise unauthenticated("the step-up assertion is invalid") from None
        if int(claims["exp"]) - int(claims["iat"]) > STEP_UP_LIFETIME_SECONDS:
            raise unauthenticated("the step-up assertion lives too long")
        try:
            return StepUp(
                user_id=str(claims["sub"]),
                org_id=str(claims["org"]),
                roles=frozenset(_roles(claims.get("roles", []))),
                purpose=str(claims["purpose"]),
                binding=str(claims["bind"]),
                assertion_id=str(claims["jti"]),
                expires_at=float(claims["exp"]),
            )
        except (ValueError, TypeError):
            raise unauthenticated("the step-up assertion's claims are invalid") from None


def _name_org(principal: Principal) -> None:
    # The trace store scopes a trace to the organisation any of its spans names: every
    # process that verifies the caller names it on the span it is serving.
    trace.get_current_span().set_attribute("doorward.org.id", principal.org_id)


def principal_from_claims(claims: dict[str, Any], token: str = "") -> Principal:
    try:
        return Principal(
            user_id=str(claims["sub"]),
            org_id=str(claims["org"]),
            roles=frozenset(_roles(claims.get("roles", []))),
            region_ids=frozenset(str(r) for r in claims.get("regions", [])),
            session_id=str(claims["sid"]),
            epoch=int(claims["sep"]),
            scope=TokenScope(claims.get("scope", TokenScope.FULL.value)),
            expires_at=float(claims["exp"]),
            token=token,
        )
    except (KeyError, ValueError, TypeError):
        raise unauthenticated("the access token's claims are invalid") from None


def _roles(values: Iterable[Any]) -> Iterable[Role]:
    for value in values:
        yield Role(str(value))
