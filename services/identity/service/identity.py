"""Identity's rules. No web framework here and no commit: adapters own the transaction.

Methods that must keep what they wrote although the caller is refused (failed-login counters,
DENIED audit events, the end of a family after refresh-token reuse) return an Outcome whose
`error` the adapter raises after committing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.auth import Principal, Role, TokenScope
from doorward_kit.decisions import (
    DecisionSpan,
    Reason,
    SpanName,
    decision_span,
    reason_of_error,
    record_denial,
)
from doorward_kit.errors import (
    DoorwardError,
    ErrorCode,
    bad_input,
    conflict,
    not_found,
    unauthenticated,
)
from doorward_kit.policy import (
    Action,
    Resource,
    authorize,
    can_read_user,
    only_self,
    region_filter,
)
from services.identity.models import (
    RefreshToken,
    Region,
    SecretsOutbox,
    SessionFamily,
    User,
)
from services.identity.repository import (
    Reader,
    Repository,
    SessionRow,
    UserFacts,
    session_check,
    session_check_and_users,
    users_with_regions,
)
from services.identity.service import mfa
from services.identity.service.passwords import Passwords, check_new_password
from services.identity.service.session_policy import (
    DEFAULT_POLICY,
    SessionPolicy,
    changed_policy,
)
from services.identity.service.tokens import (
    AccessTokenIssuer,
    hash_refresh_token,
    new_refresh_token,
)
from services.identity.session_hub import SessionChange

ACTIVE = "ACTIVE"
DEACTIVATED = "DEACTIVATED"
DEFAULT_MFA_ROLES = (Role.ADMIN.value, Role.AUDITOR.value)
LOGIN_FAILED = "the email or password is wrong"
MAX_NAME = 200
MAX_REASON = 500

T = TypeVar("T")


class AuditSink(Protocol):
    async def __call__(
        self,
        session: AsyncSession,
        *,
        org_id: str,
        actor_id: str,
        action: str,
        outcome: str,
        target_type: str = "",
        target_id: str = "",
        source_ip: str = "",
        details: dict[str, Any] | None = None,
    ) -> None: ...


@dataclass
class Outcome(Generic[T]):
    value: T | None = None
    error: DoorwardError | None = None
    changes: list[SessionChange] = field(default_factory=list)

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


@dataclass(frozen=True)
class UserView:
    id: str
    org_id: str
    email: str
    display_name: str
    roles: tuple[str, ...]
    region_ids: tuple[str, ...]
    status: str
    mfa_enabled: bool


@dataclass(frozen=True)
class AuthResult:
    access_token: str
    refresh_token: str
    expires_at: int
    user: UserView
    password_change_required: bool
    mfa_enrollment_required: bool


@dataclass(frozen=True)
class MfaEnrollment:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class SessionState:
    valid: bool
    current_epoch: int
    reason: str


@dataclass(frozen=True)
class Deactivation:
    user: UserView
    change: SessionChange | None
    outbox_id: str | None


@dataclass(frozen=True)
class UserChanges:
    display_name: str | None = None
    roles: Sequence[str] | None = None
    region_ids: Sequence[str] | None = None


@dataclass
class Throttling:
    free_failures_account: int = 5
    free_failures_address: int = 30
    block_base_seconds: float = 2.0
    block_max_seconds: float = 900.0
    failure_window_seconds: float = 3600.0

    def block_for(self, failures: int, free: int) -> float:
        if failures < free:
            return 0.0
        return min(self.block_max_seconds, self.block_base_seconds * 2 ** (failures - free))


_SESSION_REASONS = {"unknown": Reason.NOT_FOUND, "deactivated": Reason.DEACTIVATED}
# What a token whose session is no longer current is told (identity's session guard, `me`).
SESSION_ENDED = "this session has ended; log in again"


def _session_state(row: SessionRow | None, *, user_id: str, epoch: int) -> SessionState:
    """Whether a token's session is current, from the session check's row."""
    if row is None:
        return SessionState(False, 0, "unknown")
    status, current, family_user, family_ended = row
    if status != ACTIVE:
        return SessionState(False, current, "deactivated")
    if epoch != current:
        return SessionState(False, current, "stale")
    if family_user != user_id or family_ended is not None:
        return SessionState(False, current, "revoked")
    return SessionState(True, current, "")


def _record_session_refusal(state: SessionState, *, org_id: str, user_id: str) -> None:
    # Only refusals get a span: the gateway asks on every (uncached) request.
    record_denial(
        SpanName.ACCESS_DECIDE,
        _SESSION_REASONS.get(state.reason, Reason.SESSION_ENDED),
        org_id=org_id,
        actor_id=user_id,
        action="auth.session.check",
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def parse_roles(values: Iterable[str]) -> list[str]:
    roles: set[str] = set()
    for value in values:
        try:
            roles.add(Role(value).value)
        except ValueError:
            raise bad_input("roles: unknown role") from None
    return sorted(roles)


def _required_roles(values: Iterable[str]) -> list[str]:
    roles = parse_roles(values)
    if not roles:
        raise bad_input("roles: at least one role is required")
    return roles


def _required_text(name: str, value: str, maximum: int) -> str:
    """`value` without surrounding blanks, which must leave 1 to `maximum` characters."""
    clean = value.strip()
    if not clean or len(clean) > maximum:
        raise bad_input(f"{name} must have 1 to {maximum} characters")
    return clean


def _roles_and_regions(roles: Iterable[str], region_ids: Sequence[str]) -> dict[str, Any]:
    """Audit details of a new user. The audit client reads a list of ids as a phone number, so
    regions are counted here; each region change is its own event (see update_user)."""
    details: dict[str, Any] = {"count": len(region_ids), "roles": ",".join(roles)}
    if len(region_ids) == 1:
        details["region_id"] = region_ids[0]
    return details


def user_view(user: User | UserFacts, region_ids: Iterable[str]) -> UserView:
    return UserView(
        id=user.id,
        org_id=user.org_id,
        email=user.email,
        display_name=user.display_name,
        roles=tuple(sorted(user.roles)),
        region_ids=tuple(sorted(region_ids)),
        status=user.status,
        mfa_enabled=user.mfa_enabled,
    )


class IdentityService:
    def __init__(
        self,
        *,
        passwords: Passwords,
        issuer: AccessTokenIssuer,
        secret_box: mfa.SecretBox,
        throttle_key: bytes,
        audit: AuditSink,
        refresh_ttl: int,
        throttling: Throttling | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.passwords = passwords
        self.issuer = issuer
        self.secret_box = secret_box
        self._throttle_key = throttle_key
        self.audit = audit
        self.refresh_ttl = refresh_ttl
        self.throttling = throttling or Throttling()
        self.clock = clock

    async def _audit_own(
        self,
        session: AsyncSession,
        user: User,
        action: str,
        outcome: str,
        *,
        source_ip: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        """An event about a user's own account, done by that user (login, password, MFA)."""
        await self.audit(
            session,
            org_id=user.org_id,
            actor_id=user.id,
            action=action,
            outcome=outcome,
            target_type="User",
            target_id=user.id,
            source_ip=source_ip,
            details=details,
        )

    # ---- password hashing off the event loop -------------------------------------------------

    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self.passwords.hash, password)

    async def verify_password(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self.passwords.verify, password_hash, password)

    # ---- organisations ------------------------------------------------------------------------

    async def mfa_required_roles(self, session: AsyncSession, org_id: str) -> frozenset[str]:
        org = await Repository(session).org(org_id)
        if org is None:
            raise not_found("organisation")
        return frozenset(org.mfa_required_roles)

    def mfa_enrollment_required(self, user: User, required_roles: Iterable[str]) -> bool:
        return not user.mfa_enabled and bool(set(user.roles) & set(required_roles))

    # ---- login --------------------------------------------------------------------------------

    def _account_key(self, email: str) -> str:
        # An HMAC, not the email: the table holds no personal data, and unknown emails are
        # throttled exactly like known ones (so a refusal says nothing about existence).
        digest = hmac.new(self._throttle_key, email.encode(), hashlib.sha256).hexdigest()
        return "acct:" + digest[:64]

    @staticmethod
    def _address_key(source_ip: str) -> str | None:
        """The throttle key of a client address (the gateway's signed one): one per IPv4
        address, one per IPv6 /64 (one host commonly holds a whole /64). None without one."""
        try:
            ip = ipaddress.ip_address(source_ip.strip())
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return f"addr:{ip.ipv4_mapped}"
            return f"addr:{ipaddress.IPv6Network((ip, 64), strict=False)}"
        return f"addr:{ip}"

    def _rate_limited(self, blocked: float, what: str) -> DoorwardError:
        return DoorwardError(
            ErrorCode.RATE_LIMITED,
            f"too many failed {what}; try again in {int(blocked) + 1} seconds",
        )

    async def _blocked_for(self, repo: Repository, keys: list[str], now: float) -> float:
        rows = await repo.throttles(keys)
        return max((row.blocked_until - now for row in rows), default=0.0)

    async def _count_failure(self, repo: Repository, account: str, address: str | None) -> None:
        now = self.clock()
        policy = self.throttling
        window = policy.failure_window_seconds
        failures = await repo.count_failure(account, now, window)
        block = policy.block_for(failures, policy.free_failures_account)
        if block:
            await repo.block(account, now + block)
        if address:
            failures = await repo.count_failure(address, now, window)
            block = policy.block_for(failures, policy.free_failures_address)
            if block:
                await repo.block(address, now + block)

    async def login(
        self,
        session: AsyncSession,
        *,
        email: str,
        password: str,
        otp: str | None,
        source_ip: str,
    ) -> Outcome[AuthResult]:
        """A login is an access decision: one doorward.access.decide span (action auth.login)
        with the account's pseudonym when the account exists (never the email)."""
        with decision_span(SpanName.ACCESS_DECIDE, action="auth.login") as decision:
            outcome = await self._login(
                session,
                decision,
                email=email,
                password=password,
                otp=otp,
                source_ip=source_ip,
            )
            _settle(decision, outcome)
            return outcome

    async def _login(
        self,
        session: AsyncSession,
        decision: DecisionSpan,
        *,
        email: str,
        password: str,
        otp: str | None,
        source_ip: str,
    ) -> Outcome[AuthResult]:
        repo = Repository(session)
        normalised = normalise_email(email)
        # Per account and per client address, never one bucket for everyone: a stranger
        # failing with unknown emails fills only their own address's bucket.
        account = self._account_key(normalised)
        address = self._address_key(source_ip)
        now = self.clock()
        blocked = await self._blocked_for(repo, [k for k in (account, address) if k], now)
        if blocked > 0:
            decision.deny(Reason.RATE_LIMITED)
            # A brute force on a real account is what its organisation's auditors look for in
            # traces(filter: {decision: DENY}): the span names the organisation (never for an
            # unknown email; every blocked attempt does the same lookup, so no timing tells).
            _name_account(decision, await repo.user_by_email(normalised))
            return Outcome(error=self._rate_limited(blocked, "logins"))
        user = await repo.user_by_email(normalised, for_update=True)
        _name_account(decision, user)
        # Unknown email: a dummy hash is verified so the answer takes as long as for a real one.
        password_ok = await self.verify_password(user.password_hash if user else None, password)
        if user is None or not password_ok or user.status != ACTIVE:
            decision.deny(
                Reason.DEACTIVATED
                if user is not None and password_ok and user.status != ACTIVE
                else Reason.BAD_CREDENTIALS
            )
            await self._count_failure(repo, account, address)
            if user is not None:
                await self._audit_own(
                    session,
                    user,
                    "auth.login",
                    "DENIED",
                    source_ip=source_ip,
                    details={"reason": "password" if user.status == ACTIVE else "deactivated"},
                )
            return Outcome(error=unauthenticated(LOGIN_FAILED))

        second_factor = "none"
        if user.mfa_enabled:
            if not otp or not otp.strip():
                # The password was right: asking for the code reveals nothing new.
                decision.deny(Reason.MFA_REQUIRED)
                return Outcome(error=unauthenticated("enter the one-time code from your app"))
            second_factor = await self._check_second_factor(repo, user, otp)
            if not second_factor:
                decision.deny(Reason.BAD_CREDENTIALS)
                await self._count_failure(repo, account, address)
                await self._audit_own(
                    session,
                    user,
                    "auth.login",
                    "DENIED",
                    source_ip=source_ip,
                    details={"reason": "otp"},
                )
                return Outcome(error=unauthenticated("the one-time code is wrong"))

        await repo.clear_throttle(account)
        if self.passwords.needs_rehash(user.password_hash):
            user.password_hash = await self.hash_password(password)
        required_roles = await self.mfa_required_roles(session, user.org_id)
        result = await self._start_session(repo, user, required_roles)
        await self._audit_own(
            session,
            user,
            "auth.login",
            "ALLOWED",
            source_ip=source_ip,
            details={
                "mfa": second_factor,
                "scope": (
                    TokenScope.RESTRICTED.value
                    if result.password_change_required or result.mfa_enrollment_required
                    else TokenScope.FULL.value
                ),
            },
        )
        return Outcome(value=result)

    async def _check_second_factor(self, repo: Repository, user: User, otp: str) -> str:
        """'totp' or 'recovery_code' when the code is good (and now used up), else ''."""
        if mfa.looks_like_totp(otp):
            if user.mfa_secret_enc is None:
                return ""
            secret = self.secret_box.open(user.id, user.mfa_secret_enc)
            step = mfa.verify_totp(secret, otp, user.mfa_last_step, self.clock())
            if step is None:
                return ""
            user.mfa_last_step = step
            return "totp"
        code_hash = mfa.hash_recovery_code(otp)
        if await repo.use_recovery_code(user.org_id, user.id, code_hash, _utcnow()):
            return "recovery_code"
        return ""

    async def _start_session(
        self, repo: Repository, user: User, required_roles: Iterable[str]
    ) -> AuthResult:
        change_required = user.password_change_required
        mfa_required = self.mfa_enrollment_required(user, required_roles)
        scope = TokenScope.RESTRICTED if change_required or mfa_required else TokenScope.FULL
        now = _utcnow()
        policy = (await self.session_policy_of(repo, user.org_id)).for_roles(user.roles)
        family = SessionFamily(
            org_id=user.org_id,
            user_id=user.id,
            scope=scope.value,
            created_at=now,
            last_used_at=now,
            # Never past the absolute lifetime (checked again at each refresh, against the
            # policy as it is then).
            expires_at=now + min(timedelta(seconds=self.refresh_ttl), policy.absolute),
        )
        await repo.add_family(family)
        return await self._issue(repo, user, family, change_required, mfa_required)

    async def _issue(
        self,
        repo: Repository,
        user: User,
        family: SessionFamily,
        change_required: bool,
        mfa_required: bool,
    ) -> AuthResult:
        refresh = new_refresh_token()
        await repo.add_refresh_token(
            RefreshToken(
                token_hash=hash_refresh_token(refresh),
                family_id=family.id,
                org_id=user.org_id,
                user_id=user.id,
                expires_at=family.expires_at,
            )
        )
        region_ids = (await repo.region_ids_of(user.org_id, [user.id]))[user.id]
        access, expires_at = self.issuer.issue(
            user_id=user.id,
            org_id=user.org_id,
            roles=user.roles,
            region_ids=region_ids,
            session_id=family.id,
            epoch=user.session_epoch,
            scope=TokenScope(family.scope),
            now=self.clock(),
        )
        return AuthResult(
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            user=user_view(user, region_ids),
            password_change_required=change_required,
            mfa_enrollment_required=mfa_required,
        )

    # ---- refresh / logout ---------------------------------------------------------------------

    async def refresh(
        self, session: AsyncSession, refresh_token: str, *, source_ip: str = ""
    ) -> Outcome[AuthResult]:
        """Refreshing is an access decision too (action auth.refresh)."""
        with decision_span(SpanName.ACCESS_DECIDE, action="auth.refresh") as decision:
            outcome = await self._refresh(session, decision, refresh_token, source_ip=source_ip)
            _settle(decision, outcome)
            return outcome

    async def _refresh(
        self,
        session: AsyncSession,
        decision: DecisionSpan,
        refresh_token: str,
        *,
        source_ip: str = "",
    ) -> Outcome[AuthResult]:
        repo = Repository(session)
        refused = unauthenticated("the refresh token is not valid; log in again")
        row = await repo.refresh_token(hash_refresh_token(refresh_token.strip()))
        if row is None:
            decision.deny(Reason.INVALID_TOKEN)
            return Outcome(error=refused)
        decision.org(row.org_id)
        decision.actor(row.user_id)
        family = await repo.family(row.org_id, row.family_id)
        if family is None or family.ended_at is not None:
            decision.deny(Reason.SESSION_ENDED)
            return Outcome(error=refused)
        now = _utcnow()
        if row.used_at is not None:
            decision.deny(Reason.CONSUMED)
            # A rotated token came back: whoever holds the family now may be a thief.
            await repo.end_family(row.org_id, family.id, "refresh_reuse", now)
            await self.audit(
                session,
                org_id=row.org_id,
                actor_id=row.user_id,
                action="auth.refresh.reuse",
                outcome="DENIED",
                target_type="Session",
                target_id=family.id,
                source_ip=source_ip,
                details={"reason": "refresh_reuse", "session_id": family.id},
            )
            user_state = await repo.session_state(row.org_id, row.user_id)
            change = SessionChange(
                user_id=row.user_id,
                org_id=row.org_id,
                epoch=user_state[1] if user_state else 0,
                session_id=family.id,
            )
            return Outcome(error=refused, changes=[change])
        if row.expires_at <= now or family.expires_at <= now:
            decision.deny(Reason.EXPIRED)
            return Outcome(error=refused)
        user = await repo.user(row.org_id, row.user_id)
        if user is None or user.status != ACTIVE:
            decision.deny(Reason.DEACTIVATED)
            await repo.end_family(row.org_id, family.id, "deactivated", now)
            return Outcome(error=refused)
        policy = (await self.session_policy_of(repo, user.org_id)).for_roles(user.roles)
        ended = policy.expiry(family.created_at, family.last_used_at, now)
        if ended is not None:
            # Automatic logoff: the session ends for good (its access tokens with it).
            await repo.end_family(row.org_id, family.id, ended, now)
            await self.audit(
                session,
                org_id=user.org_id,
                actor_id=user.id,
                action="auth.session.expire",
                outcome="DENIED",
                target_type="Session",
                target_id=family.id,
                source_ip=source_ip,
                details={"reason": ended, "session_id": family.id},
            )
            change = SessionChange(
                user_id=user.id, org_id=user.org_id, epoch=user.session_epoch, session_id=family.id
            )
            return Outcome(
                error=unauthenticated("the session has timed out; log in again"), changes=[change]
            )
        await repo.mark_refresh_used(row.org_id, row.token_hash, now)
        family.last_used_at = now
        required_roles = await self.mfa_required_roles(session, user.org_id)
        change_required = user.password_change_required
        mfa_required = self.mfa_enrollment_required(user, required_roles)
        if (change_required or mfa_required) and family.scope != TokenScope.RESTRICTED.value:
            # Promoted (to a role the organisation wants MFA for) since this session began: from
            # now on the session is good only for enrolling, as a login would be. For good: once
            # enrolled, the user logs in again (with the code), as after a restricted login.
            family.scope = TokenScope.RESTRICTED.value
            await self.audit(
                session,
                org_id=user.org_id,
                actor_id=user.id,
                action="auth.session.restrict",
                outcome="ALLOWED",
                target_type="Session",
                target_id=family.id,
                source_ip=source_ip,
                details={"reason": "mfa_enrollment" if mfa_required else "password_change"},
            )
        result = await self._issue(repo, user, family, change_required, mfa_required)
        return Outcome(value=result)

    # ---- automatic logoff (session policy) ------------------------------------------------------

    async def session_policy_of(self, repo: Repository, org_id: str) -> SessionPolicy:
        row = await repo.session_policy(org_id)
        if row is None:
            return DEFAULT_POLICY
        return SessionPolicy(row.idle_minutes, row.absolute_hours)

    async def get_session_policy(
        self, session: AsyncSession, principal: Principal
    ) -> SessionPolicy:
        authorize(principal, Action.SESSION_POLICY_READ, Resource(principal.org_id))
        return await self.session_policy_of(Repository(session), principal.org_id)

    async def update_session_policy(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        idle_minutes: int | None,
        absolute_hours: int | None,
        source_ip: str = "",
    ) -> SessionPolicy:
        authorize(principal, Action.SESSION_POLICY_UPDATE, Resource(principal.org_id))
        repo = Repository(session)
        current = await self.session_policy_of(repo, principal.org_id)
        policy = changed_policy(current, idle_minutes, absolute_hours)
        await repo.save_session_policy(
            principal.org_id, policy.idle_minutes, policy.absolute_hours, principal.user_id
        )
        await self.audit(
            session,
            org_id=principal.org_id,
            actor_id=principal.user_id,
            action="org.session_policy.update",
            outcome="ALLOWED",
            target_type="Organisation",
            target_id=principal.org_id,
            source_ip=source_ip,
            details={
                "window_seconds": policy.idle_minutes * 60,
                "ttl_seconds": policy.absolute_hours * 3600,
            },
        )
        return policy

    async def logout(self, session: AsyncSession, principal: Principal) -> Outcome[bool]:
        repo = Repository(session)
        await repo.end_family(principal.org_id, principal.session_id, "logout", _utcnow())
        await self.audit(
            session,
            org_id=principal.org_id,
            actor_id=principal.user_id,
            action="auth.logout",
            outcome="ALLOWED",
            target_type="Session",
            target_id=principal.session_id,
        )
        change = SessionChange(
            user_id=principal.user_id,
            org_id=principal.org_id,
            epoch=principal.epoch,
            session_id=principal.session_id,
        )
        return Outcome(value=True, changes=[change])

    # ---- password and MFA (the caller's own account; restricted tokens allowed) --------------

    async def _own_user(self, repo: Repository, principal: Principal) -> User:
        user = await repo.user(principal.org_id, principal.user_id, for_update=True)
        if user is None or user.status != ACTIVE:
            raise unauthenticated("this session has ended; log in again")
        return user

    async def change_password(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        source_ip: str = "",
    ) -> Outcome[bool]:
        repo = Repository(session)
        user = await self._own_user(repo, principal)
        check_new_password(new_password)
        # Guessing the current password here is guessing the login password: the same
        # throttle (per account, per client address) applies, before any verification.
        account = self._account_key(user.email)
        address = self._address_key(source_ip)
        blocked = await self._blocked_for(repo, [k for k in (account, address) if k], self.clock())
        if blocked > 0:
            return Outcome(error=self._rate_limited(blocked, "password checks"))
        if not await self.verify_password(user.password_hash, current_password):
            await self._count_failure(repo, account, address)
            await self._audit_own(
                session,
                user,
                "user.password.change",
                "DENIED",
                source_ip=source_ip,
                details={"reason": "current_password"},
            )
            return Outcome(error=bad_input("the current password is wrong"))
        if hmac.compare_digest(current_password.encode(), new_password.encode()):
            raise bad_input("the new password must differ from the current one")
        await repo.clear_throttle(account)
        user.password_hash = await self.hash_password(new_password)
        user.password_change_required = False
        # Every session ends (a stolen one too); the user logs in again with the new password.
        epoch = await repo.bump_epoch(user.org_id, user.id)
        ended = await repo.end_all_families(user.org_id, user.id, "password_changed", _utcnow())
        await self._audit_own(
            session,
            user,
            "user.password.change",
            "ALLOWED",
            source_ip=source_ip,
            details={"count": ended},
        )
        change = SessionChange(user_id=user.id, org_id=user.org_id, epoch=epoch)
        return Outcome(value=True, changes=[change])

    async def enroll_mfa(self, session: AsyncSession, principal: Principal) -> MfaEnrollment:
        repo = Repository(session)
        user = await self._own_user(repo, principal)
        if user.mfa_enabled:
            raise conflict("MFA is already enabled for this account")
        secret = mfa.new_secret()
        user.mfa_pending_secret_enc = self.secret_box.seal(user.id, secret)
        await self._audit_own(session, user, "user.mfa.enroll", "ALLOWED")
        return MfaEnrollment(secret=secret, otpauth_uri=mfa.otpauth_uri(secret, user.email))

    async def confirm_mfa(
        self, session: AsyncSession, principal: Principal, otp: str
    ) -> Outcome[list[str]]:
        repo = Repository(session)
        user = await self._own_user(repo, principal)
        if user.mfa_enabled:
            raise conflict("MFA is already enabled for this account")
        if user.mfa_pending_secret_enc is None:
            raise bad_input("start MFA enrolment (enrollMfa) first")
        secret = self.secret_box.open(user.id, user.mfa_pending_secret_enc)
        step = mfa.verify_totp(secret, otp, 0, self.clock())
        if step is None:
            await self._audit_own(
                session, user, "user.mfa.enable", "DENIED", details={"reason": "otp"}
            )
            return Outcome(error=bad_input("the one-time code is wrong"))
        user.mfa_secret_enc = user.mfa_pending_secret_enc
        user.mfa_pending_secret_enc = None
        user.mfa_enabled = True
        user.mfa_last_step = step
        codes = mfa.new_recovery_codes()
        await repo.replace_recovery_codes(
            user.org_id, user.id, [mfa.hash_recovery_code(c) for c in codes]
        )
        await self._audit_own(session, user, "user.mfa.enable", "ALLOWED")
        return Outcome(value=codes)

    # ---- reading users and regions ------------------------------------------------------------

    def visible_regions(self, principal: Principal, region_ids: Iterable[str]) -> tuple[str, ...]:
        """Of a user's regions, those the caller may see (a London dispatcher looking at a
        colleague who also works Manchester sees only London)."""
        allowed = region_filter(principal, Action.REGION_READ)
        return tuple(r for r in region_ids if allowed is None or r in allowed)

    def _redact_view(self, principal: Principal, view: UserView) -> UserView:
        return UserView(
            id=view.id,
            org_id=view.org_id,
            email=view.email,
            display_name=view.display_name,
            roles=view.roles,
            region_ids=self.visible_regions(principal, view.region_ids),
            status=view.status,
            mfa_enabled=view.mfa_enabled,
        )

    async def me(self, session: Reader, principal: Principal) -> UserView:
        # One query, user and regions (`me` is every console's first request).
        rows = await users_with_regions(session, principal.org_id, [principal.user_id])
        return self._me_view(principal, rows)

    def _me_view(self, principal: Principal, rows: list[tuple[UserFacts, list[str]]]) -> UserView:
        if not rows:
            raise unauthenticated(SESSION_ENDED)
        user, regions = rows[0]
        return self._redact_view(principal, user_view(user, regions))

    async def get_user(
        self, session: AsyncSession, principal: Principal, user_id: str
    ) -> UserView | None:
        """None when absent or not visible to the caller (the two look the same)."""
        repo = Repository(session)
        user = await repo.user(principal.org_id, user_id)
        if user is None:
            return None
        regions = (await repo.region_ids_of(user.org_id, [user.id]))[user.id]
        if not can_read_user(principal, user.org_id, user.id, regions):
            return None
        return self._redact_view(principal, user_view(user, regions))

    async def get_users_visible(
        self, session: Reader, principal: Principal, user_ids: Sequence[str]
    ) -> dict[str, UserView]:
        """The ones among these the caller may see, by id, in one query (federation batches)."""
        rows = await users_with_regions(session, principal.org_id, list(user_ids)[:1000])
        return self._visible_views(principal, rows)

    def _visible_views(
        self, principal: Principal, rows: list[tuple[UserFacts, list[str]]]
    ) -> dict[str, UserView]:
        return {
            u.id: self._redact_view(principal, user_view(u, regions))
            for u, regions in rows
            if can_read_user(principal, u.org_id, u.id, regions)
        }

    async def list_users(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        region_id: str | None = None,
        role: str | None = None,
    ) -> list[UserView]:
        repo = Repository(session)
        if role is not None:
            role = parse_roles([role])[0]
        allowed = region_filter(principal, Action.USER_READ)
        user_ids: list[str] | None = None
        region_ids: list[str] | None
        if only_self(principal, Action.USER_READ):
            user_ids, region_ids = [principal.user_id], None
        elif allowed is None:
            region_ids = [region_id] if region_id is not None else None
        elif region_id is not None:
            region_ids = [region_id] if region_id in allowed else []
        else:
            region_ids = sorted(allowed)
        if region_ids == []:
            return []
        if user_ids is not None and region_id is not None:
            region_ids = [region_id]
        users = await repo.users(
            principal.org_id, region_ids=region_ids, role=role, user_ids=user_ids
        )
        memberships = await repo.region_ids_of(principal.org_id, [u.id for u in users])
        views = []
        for user in users:
            # Belt and braces: the query already filtered; the policy has the last word.
            if can_read_user(principal, user.org_id, user.id, memberships[user.id]):
                views.append(self._redact_view(principal, user_view(user, memberships[user.id])))
        return views

    async def regions(self, session: AsyncSession, principal: Principal) -> list[Region]:
        allowed = region_filter(principal, Action.REGION_READ)
        if allowed is not None and not allowed:
            return []
        return list(await Repository(session).regions(principal.org_id, allowed))

    async def regions_for_org(
        self, session: AsyncSession, org_id: str, region_ids: Iterable[str]
    ) -> list[Region]:
        """A user's own regions, for the payload of their login (before any token exists)."""
        wanted = list(region_ids)
        return list(await Repository(session).regions(org_id, wanted)) if wanted else []

    async def regions_by_id(
        self, session: AsyncSession, principal: Principal, region_ids: Iterable[str]
    ) -> list[Region]:
        allowed = region_filter(principal, Action.REGION_READ)
        wanted = [r for r in region_ids if allowed is None or r in allowed]
        if not wanted:
            return []
        return list(await Repository(session).regions(principal.org_id, wanted))

    # ---- administration -----------------------------------------------------------------------

    async def create_region(self, session: AsyncSession, principal: Principal, name: str) -> Region:
        authorize(principal, Action.REGION_CREATE, Resource(org_id=principal.org_id))
        clean = _required_text("name", name, MAX_NAME)
        repo = Repository(session)
        if await repo.region_by_name(principal.org_id, clean) is not None:
            raise conflict("a region with this name already exists")
        region = Region(org_id=principal.org_id, name=clean)
        await repo.add_region(region)
        await self.audit(
            session,
            org_id=principal.org_id,
            actor_id=principal.user_id,
            action="region.create",
            outcome="ALLOWED",
            target_type="Region",
            target_id=region.id,
        )
        return region

    async def _check_regions(
        self, repo: Repository, org_id: str, region_ids: Iterable[str]
    ) -> list[str]:
        wanted = sorted(set(region_ids))
        found = {r.id for r in await repo.regions(org_id, wanted)}
        if len(found) != len(wanted):
            raise bad_input("regionIds: unknown region")
        return wanted

    async def create_user(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        email: str,
        display_name: str,
        roles: Sequence[str],
        region_ids: Sequence[str],
        initial_password: str,
    ) -> UserView:
        authorize(principal, Action.USER_CREATE, Resource(org_id=principal.org_id))
        repo = Repository(session)
        view = await self.add_user(
            repo,
            org_id=principal.org_id,
            email=email,
            display_name=display_name,
            roles=roles,
            region_ids=region_ids,
            password=initial_password,
            password_change_required=True,
        )
        await self.audit(
            session,
            org_id=principal.org_id,
            actor_id=principal.user_id,
            action="user.create",
            outcome="ALLOWED",
            target_type="User",
            target_id=view.id,
            details=_roles_and_regions(view.roles, view.region_ids),
        )
        return view

    async def add_user(
        self,
        repo: Repository,
        *,
        org_id: str,
        email: str,
        display_name: str,
        roles: Sequence[str],
        region_ids: Sequence[str],
        password: str,
        password_change_required: bool,
        mfa_secret: str | None = None,
    ) -> UserView:
        """Validation and insertion shared by createUser and bootstrap."""
        try:
            address = validate_email(email.strip(), check_deliverability=False).normalized
        except EmailNotValidError:
            raise bad_input("email is not a valid address") from None
        address = normalise_email(address)
        name = _required_text("displayName", display_name, MAX_NAME)
        role_values = _required_roles(roles)
        regions = await self._check_regions(repo, org_id, region_ids)
        check_new_password(password)
        if await repo.email_taken(address):
            raise conflict("this email cannot be used for a new account")
        user = User(
            org_id=org_id,
            email=address,
            display_name=name,
            roles=role_values,
            status=ACTIVE,
            password_hash=await self.hash_password(password),
            password_change_required=password_change_required,
            session_epoch=0,
            mfa_enabled=mfa_secret is not None,
            mfa_last_step=0,
        )
        try:
            await repo.add_user(user, regions)
        except IntegrityError:
            raise conflict("this email cannot be used for a new account") from None
        if mfa_secret is not None:
            user.mfa_secret_enc = self.secret_box.seal(user.id, mfa_secret)
            await repo.flush()
        return user_view(user, regions)

    async def _admin_target(
        self, repo: Repository, principal: Principal, user_id: str, action: Action
    ) -> User:
        user = await repo.user(principal.org_id, user_id, for_update=True)
        if user is None:
            authorize(principal, action, Resource(org_id=principal.org_id))
            raise not_found("user")
        authorize(principal, action, Resource(org_id=user.org_id, user_id=user.id))
        return user

    async def update_user(
        self, session: AsyncSession, principal: Principal, user_id: str, changes: UserChanges
    ) -> Outcome[UserView]:
        repo = Repository(session)
        user = await self._admin_target(repo, principal, user_id, Action.USER_UPDATE)
        current_regions = (await repo.region_ids_of(user.org_id, [user.id]))[user.id]
        audit_actions: list[tuple[str, dict[str, Any]]] = []
        claims_changed = False
        if changes.display_name is not None:
            name = _required_text("displayName", changes.display_name, MAX_NAME)
            if name != user.display_name:
                user.display_name = name
                audit_actions.append(("user.update", {"fields": "displayName"}))
        if changes.roles is not None:
            roles = _required_roles(changes.roles)
            if user.id == principal.user_id and Role.ADMIN.value not in roles:
                raise bad_input("you cannot remove your own ADMIN role")
            if roles != sorted(user.roles):
                audit_actions.append(
                    (
                        "user.roles.change",
                        {"previous_roles": ",".join(sorted(user.roles)), "roles": ",".join(roles)},
                    )
                )
                user.roles = roles
                claims_changed = True
        regions = current_regions
        if changes.region_ids is not None:
            regions = await self._check_regions(repo, user.org_id, changes.region_ids)
            if regions != sorted(current_regions):
                await repo.set_user_regions(user.org_id, user.id, regions)
                for added in sorted(set(regions) - set(current_regions)):
                    audit_actions.append(
                        ("user.regions.change", {"region_id": added, "result": "added"})
                    )
                for removed in sorted(set(current_regions) - set(regions)):
                    audit_actions.append(
                        ("user.regions.change", {"region_id": removed, "result": "removed"})
                    )
                claims_changed = True
        outcome: Outcome[UserView] = Outcome()
        if claims_changed:
            # Tokens carry roles and regions: old ones must not outlive the change.
            user.session_epoch = await repo.bump_epoch(user.org_id, user.id)
            outcome.changes.append(
                SessionChange(user_id=user.id, org_id=user.org_id, epoch=user.session_epoch)
            )
        await repo.flush()
        for action, details in audit_actions:
            await self.audit(
                session,
                org_id=user.org_id,
                actor_id=principal.user_id,
                action=action,
                outcome="ALLOWED",
                target_type="User",
                target_id=user.id,
                details=details,
            )
        outcome.value = user_view(user, regions)
        return outcome

    async def deactivate_user(
        self, session: AsyncSession, principal: Principal, user_id: str, reason: str
    ) -> Deactivation:
        repo = Repository(session)
        user = await self._admin_target(repo, principal, user_id, Action.USER_DEACTIVATE)
        clean_reason = _required_text("reason", reason, MAX_REASON)
        if user.id == principal.user_id:
            raise bad_input("you cannot deactivate yourself")
        regions = (await repo.region_ids_of(user.org_id, [user.id]))[user.id]
        if user.status == DEACTIVATED:
            return Deactivation(user_view(user, regions), None, None)
        now = _utcnow()
        user.status = DEACTIVATED
        # Free text may name people: kept in identity's table, never in the audit trail.
        user.deactivation_reason = clean_reason
        user.deactivated_at = now
        epoch = await repo.bump_epoch(user.org_id, user.id)
        user.session_epoch = epoch
        ended = await repo.end_all_families(user.org_id, user.id, "deactivated", now)
        outbox = SecretsOutbox(
            org_id=user.org_id, user_id=user.id, reason="deactivated", next_attempt_at=0.0
        )
        await repo.add_outbox(outbox)
        await self.audit(
            session,
            org_id=user.org_id,
            actor_id=principal.user_id,
            action="user.deactivate",
            outcome="ALLOWED",
            target_type="User",
            target_id=user.id,
            details={"count": ended},
        )
        change = SessionChange(user_id=user.id, org_id=user.org_id, epoch=epoch, deactivated=True)
        return Deactivation(user_view(user, regions), change, outbox.id)

    # ---- internal (gRPC) ----------------------------------------------------------------------

    async def check_session(
        self, session: Reader, *, org_id: str, user_id: str, epoch: int, session_id: str
    ) -> SessionState:
        row = await session_check(session, org_id, user_id, session_id)
        state = _session_state(row, user_id=user_id, epoch=epoch)
        if not state.valid:
            _record_session_refusal(state, org_id=org_id, user_id=user_id)
        return state

    async def _checked_users(
        self, reader: Reader, principal: Principal, user_ids: Sequence[str]
    ) -> list[tuple[UserFacts, list[str]]]:
        """The principal's session check (check_session's rules and refusal) and the users by
        id, in one statement. Raises UNAUTHENTICATED, using nothing that was read, when the
        session is not current (what the session guard raises)."""
        row, users = await session_check_and_users(
            reader, principal.org_id, principal.user_id, principal.session_id, user_ids
        )
        state = _session_state(row, user_id=principal.user_id, epoch=principal.epoch)
        if not state.valid:
            _record_session_refusal(state, org_id=principal.org_id, user_id=principal.user_id)
            raise unauthenticated(SESSION_ENDED)
        return users

    async def checked_users_visible(
        self, reader: Reader, principal: Principal, user_ids: Sequence[str]
    ) -> dict[str, UserView]:
        """get_users_visible, with the principal's session checked in the same statement
        (TokenVerifier.verify_with): a federated batch of users is one round trip."""
        rows = await self._checked_users(reader, principal, list(user_ids)[:1000])
        return self._visible_views(principal, rows)

    async def checked_me(self, reader: Reader, principal: Principal) -> UserView:
        """me(), with the principal's session checked in the same statement."""
        rows = await self._checked_users(reader, principal, [principal.user_id])
        return self._me_view(principal, rows)

    async def existing_region_ids(
        self, session: AsyncSession, org_id: str, region_ids: Sequence[str]
    ) -> list[str]:
        """The ids among these that name a region of this organisation."""
        rows = await Repository(session).regions(org_id, only=list(region_ids)[:1000])
        return [r.id for r in rows]

    async def get_users(
        self, session: AsyncSession, org_id: str, user_ids: Sequence[str]
    ) -> list[UserView]:
        repo = Repository(session)
        users = await repo.users(org_id, user_ids=list(user_ids)[:1000])
        memberships = await repo.region_ids_of(org_id, [u.id for u in users])
        return [user_view(u, memberships[u.id]) for u in users]


def _name_account(decision: DecisionSpan, user: Any) -> None:
    """A sign-in decision names the account's organisation and pseudonym once the account is
    known to exist; an unknown email leaves both off (the span is no enumeration oracle)."""
    if user is not None:
        decision.org(user.org_id)
        decision.actor(user.id)


def _settle(decision: DecisionSpan, outcome: Outcome[Any]) -> None:
    """A sign-in step's decision follows its outcome, unless the step already named why it
    refused (a more precise reason than the error's)."""
    if outcome.error is None:
        decision.allow(Reason.AUTHENTICATED)
    elif decision.decision is None:
        decision.deny(reason_of_error(outcome.error))
