"""Identity's GraphQL subgraph (Federation v2), exactly the contract's names.

Every resolver verifies the caller's token through the context and asks the policy; so does
every resolve_reference (`_entities` is not a back door). login and refresh need no token;
changePassword, enrollMfa, confirmMfa and logout also accept a restricted token.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import strawberry
import strawberry.federation
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.fastapi import GraphQLRouter
from strawberry.types import Info

from doorward_kit.auth import Principal
from doorward_kit.errors import DoorwardError, ErrorCode, not_found
from doorward_kit.graphql import (
    GatewayGate,
    RequestContext,
    SubgraphSchema,
    caller,
    schema_extensions,
    subgraph_router,
)
from doorward_kit.text import audit_target_id
from services.identity.models import Region as RegionRow
from services.identity.runtime import Identity
from services.identity.service.identity import AuthResult, UserChanges, UserView
from services.identity.service.session_policy import SessionPolicy as Policy

T = TypeVar("T")
log = logging.getLogger(__name__)


@strawberry.enum
class Role(enum.Enum):
    ADMIN = "ADMIN"
    DISPATCHER = "DISPATCHER"
    TECHNICIAN = "TECHNICIAN"
    SUBCONTRACTOR = "SUBCONTRACTOR"
    AUDITOR = "AUDITOR"


@strawberry.enum
class UserStatus(enum.Enum):
    ACTIVE = "ACTIVE"
    DEACTIVATED = "DEACTIVATED"


def _identity(info: Info) -> Identity:
    identity: Identity = info.context.services
    return identity


@strawberry.federation.type(keys=["id"])
class Region:
    id: strawberry.ID
    name: str

    @classmethod
    def from_row(cls, row: RegionRow) -> Region:
        return cls(id=strawberry.ID(row.id), name=row.name)

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> Region | None:
        principal = await caller(info)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            rows = await identity.service.regions_by_id(session, principal, [str(id)])
        return cls.from_row(rows[0]) if rows else None


@strawberry.federation.type(keys=["id"])
class User:
    id: strawberry.ID
    email: str
    display_name: str
    roles: list[Role]
    status: UserStatus
    mfa_enabled: bool
    region_ids: strawberry.Private[tuple[str, ...]]
    # Set for the user of an AuthPayload, whose token may be restricted.
    preloaded_regions: strawberry.Private[list[Region] | None] = None

    @classmethod
    def from_view(cls, view: UserView, regions: list[Region] | None = None) -> User:
        return cls(
            id=strawberry.ID(view.id),
            email=view.email,
            display_name=view.display_name,
            roles=[Role(r) for r in view.roles],
            status=UserStatus(view.status),
            mfa_enabled=view.mfa_enabled,
            region_ids=view.region_ids,
            preloaded_regions=regions,
        )

    @strawberry.field
    async def regions(self, info: Info) -> list[Region]:
        if self.preloaded_regions is not None:
            return self.preloaded_regions
        principal = await caller(info)
        identity = _identity(info)
        async with identity.db.reads() as session:
            rows = await identity.service.regions_by_id(session, principal, self.region_ids)
        return [Region.from_row(r) for r in rows]

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> User | None:
        principal = await caller(info)
        identity = _identity(info)

        async def load(ids: list[str]) -> list[UserView | None]:
            async with identity.db.raw_reads() as conn:  # one query for the whole batch
                found = await identity.service.get_users_visible(conn, principal, ids)
            return [found.get(i) for i in ids]

        view = await info.context.loader("users", load).load(str(id))
        return cls.from_view(view) if view else None

    @classmethod
    async def resolve_references(
        cls, info: Info, representations: list[dict[str, str]]
    ) -> list[User | None]:
        """A request's users at once (doorward_kit.entities; the board's assignees): one
        statement that is also the caller's session check when this request has not checked
        it yet (TokenVerifier.verify_with), where resolve_reference's 20 coroutines met in a
        DataLoader after a session check of its own. The same policy per user: one the caller
        may not see is None, as there."""
        ids = list(dict.fromkeys(str(r["id"]) for r in representations))
        context: RequestContext = info.context
        identity = _identity(info)
        async with identity.db.raw_reads() as conn:

            async def checked(principal: Principal) -> dict[str, UserView]:
                return await identity.service.checked_users_visible(conn, principal, ids)

            principal, found = await context.principal_with(checked)
            if found is None:  # the caller was checked already: the users alone
                found = await identity.service.get_users_visible(conn, principal, ids)
        views = found
        return [
            cls.from_view(views[r["id"]]) if r["id"] in views else None for r in representations
        ]


@strawberry.type
class AuthPayload:
    access_token: str
    refresh_token: str
    expires_at: datetime
    user: User
    password_change_required: bool
    mfa_enrollment_required: bool


@strawberry.type(
    description="Automatic logoff: a session (a login and its refreshes) ends when it has not "
    "been refreshed for idleMinutes or is older than absoluteHours. ADMIN and AUDITOR sessions "
    "get at most the privileged values."
)
class SessionPolicy:
    idle_minutes: int
    absolute_hours: int
    privileged_idle_minutes: int
    privileged_absolute_hours: int

    @classmethod
    def of(cls, policy: Policy) -> SessionPolicy:
        strict = policy.privileged
        return cls(
            idle_minutes=policy.idle_minutes,
            absolute_hours=policy.absolute_hours,
            privileged_idle_minutes=strict.idle_minutes,
            privileged_absolute_hours=strict.absolute_hours,
        )


@strawberry.type
class MfaEnrollment:
    secret: str
    otpauth_uri: str


@strawberry.type
class MfaConfirmation:
    recovery_codes: list[str]


@strawberry.input
class CreateUserInput:
    email: str
    display_name: str
    roles: list[Role]
    region_ids: list[strawberry.ID]
    initial_password: str


@strawberry.input
class UpdateUserInput:
    display_name: str | None = None
    roles: list[Role] | None = None
    region_ids: list[strawberry.ID] | None = None


async def _auth_payload(identity: Identity, result: AuthResult) -> AuthPayload:
    async with identity.db.unit_of_work() as session:
        rows = await identity.service.regions_for_org(
            session, result.user.org_id, result.user.region_ids
        )
    user = User.from_view(result.user, [Region.from_row(r) for r in rows])
    return AuthPayload(
        access_token=result.access_token,
        refresh_token=result.refresh_token,
        expires_at=datetime.fromtimestamp(result.expires_at, UTC),
        user=user,
        password_change_required=result.password_change_required,
        mfa_enrollment_required=result.mfa_enrollment_required,
    )


async def _users_with_regions(
    identity: Identity, session: AsyncSession, principal: Principal, views: list[UserView]
) -> list[User]:
    """One query for the regions of a whole list (instead of one per user)."""
    wanted = sorted({r for v in views for r in v.region_ids})
    rows = await identity.service.regions_by_id(session, principal, wanted) if wanted else []
    by_id = {row.id: Region.from_row(row) for row in rows}
    return [User.from_view(v, [by_id[r] for r in v.region_ids if r in by_id]) for v in views]


async def _admin(
    info: Info,
    principal: Principal,
    action: str,
    target_type: str,
    target_id: str,
    run: Callable[[], Awaitable[T]],
) -> T:
    """Run an administrative change; a refusal is audited (DENIED) in its own transaction."""
    try:
        return await run()
    except DoorwardError as error:
        if error.code in (ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND):
            identity = _identity(info)
            async with identity.db.unit_of_work() as session:
                await identity.service.audit(
                    session,
                    org_id=principal.org_id,
                    actor_id=principal.user_id,
                    action=action,
                    outcome="DENIED",
                    target_type=target_type,
                    target_id=audit_target_id(target_id),
                    source_ip=info.context.source_ip,
                    details={"code": error.code.value},
                )
        raise


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: Info) -> User:
        context: RequestContext = info.context
        identity = _identity(info)
        # One statement: the session check, and the user with their regions.
        async with identity.db.raw_reads() as conn:

            async def checked(principal: Principal) -> UserView:
                return await identity.service.checked_me(conn, principal)

            principal, view = await context.principal_with(checked)
            if view is None:  # the caller was checked already: the user alone
                view = await identity.service.me(conn, principal)
        return User.from_view(view)

    @strawberry.field
    async def users(
        self, info: Info, region_id: strawberry.ID | None = None, role: Role | None = None
    ) -> list[User]:
        principal = await caller(info)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            views = await identity.service.list_users(
                session,
                principal,
                region_id=str(region_id) if region_id is not None else None,
                role=role.value if role is not None else None,
            )
            return await _users_with_regions(identity, session, principal, views)

    @strawberry.field
    async def user(self, info: Info, id: strawberry.ID) -> User | None:
        principal = await caller(info)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            view = await identity.service.get_user(session, principal, str(id))
        if view is None:
            raise not_found("user")
        return User.from_view(view)

    @strawberry.field
    async def regions(self, info: Info) -> list[Region]:
        principal = await caller(info)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            rows = await identity.service.regions(session, principal)
        return [Region.from_row(r) for r in rows]

    @strawberry.field(description="ADMIN and AUDITOR: the organisation's automatic logoff.")
    async def session_policy(self, info: Info) -> SessionPolicy:
        principal = await caller(info)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            policy = await identity.service.get_session_policy(session, principal)
        return SessionPolicy.of(policy)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def login(
        self, info: Info, email: str, password: str, otp: str | None = None
    ) -> AuthPayload:
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            outcome = await identity.service.login(
                session, email=email, password=password, otp=otp, source_ip=info.context.source_ip
            )
        return await _auth_payload(identity, outcome.unwrap())

    @strawberry.mutation
    async def refresh(self, info: Info, refresh_token: str) -> AuthPayload:
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            outcome = await identity.service.refresh(
                session, refresh_token, source_ip=info.context.source_ip
            )
        await identity.publish(outcome.changes)
        return await _auth_payload(identity, outcome.unwrap())

    @strawberry.mutation
    async def logout(self, info: Info) -> bool:
        principal = await caller(info, allow_restricted=True)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            outcome = await identity.service.logout(session, principal)
        await identity.publish(outcome.changes)
        return outcome.unwrap()

    @strawberry.mutation
    async def change_password(self, info: Info, current_password: str, new_password: str) -> bool:
        principal = await caller(info, allow_restricted=True)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            outcome = await identity.service.change_password(
                session,
                principal,
                current_password=current_password,
                new_password=new_password,
                source_ip=info.context.source_ip,
            )
        await identity.publish(outcome.changes)
        return outcome.unwrap()

    @strawberry.mutation
    async def enroll_mfa(self, info: Info) -> MfaEnrollment:
        principal = await caller(info, allow_restricted=True)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            enrollment = await identity.service.enroll_mfa(session, principal)
        return MfaEnrollment(secret=enrollment.secret, otpauth_uri=enrollment.otpauth_uri)

    @strawberry.mutation
    async def confirm_mfa(self, info: Info, otp: str) -> MfaConfirmation:
        principal = await caller(info, allow_restricted=True)
        identity = _identity(info)
        async with identity.db.unit_of_work() as session:
            outcome = await identity.service.confirm_mfa(session, principal, otp)
        return MfaConfirmation(recovery_codes=outcome.unwrap())

    @strawberry.mutation
    async def create_region(self, info: Info, name: str) -> Region:
        principal = await caller(info)
        identity = _identity(info)

        async def run() -> RegionRow:
            async with identity.db.unit_of_work() as session:
                return await identity.service.create_region(session, principal, name)

        row = await _admin(info, principal, "region.create", "Region", "", run)
        return Region.from_row(row)

    @strawberry.mutation
    async def create_user(self, info: Info, input: CreateUserInput) -> User:
        principal = await caller(info)
        identity = _identity(info)

        async def run() -> UserView:
            async with identity.db.unit_of_work() as session:
                return await identity.service.create_user(
                    session,
                    principal,
                    email=input.email,
                    display_name=input.display_name,
                    roles=[r.value for r in input.roles],
                    region_ids=[str(r) for r in input.region_ids],
                    initial_password=input.initial_password,
                )

        view = await _admin(info, principal, "user.create", "User", "", run)
        return User.from_view(view)

    @strawberry.mutation
    async def update_user(self, info: Info, id: strawberry.ID, input: UpdateUserInput) -> User:
        principal = await caller(info)
        identity = _identity(info)
        changes = UserChanges(
            display_name=input.display_name,
            roles=[r.value for r in input.roles] if input.roles is not None else None,
            region_ids=[str(r) for r in input.region_ids] if input.region_ids is not None else None,
        )

        async def run() -> Any:
            async with identity.db.unit_of_work() as session:
                return await identity.service.update_user(session, principal, str(id), changes)

        outcome = await _admin(info, principal, "user.update", "User", str(id), run)
        await identity.publish(outcome.changes)
        return User.from_view(outcome.unwrap())

    @strawberry.mutation(
        description="ADMIN only. Set the idle timeout (minutes) and the absolute lifetime "
        "(hours) of sessions; an omitted value stays. Applies to running sessions at their next "
        "refresh."
    )
    async def update_session_policy(
        self, info: Info, idle_minutes: int | None = None, absolute_hours: int | None = None
    ) -> SessionPolicy:
        principal = await caller(info)
        identity = _identity(info)

        async def run() -> Policy:
            async with identity.db.unit_of_work() as session:
                return await identity.service.update_session_policy(
                    session,
                    principal,
                    idle_minutes=idle_minutes,
                    absolute_hours=absolute_hours,
                    source_ip=info.context.source_ip,
                )

        policy = await _admin(
            info, principal, "org.session_policy.update", "Organisation", principal.org_id, run
        )
        return SessionPolicy.of(policy)

    @strawberry.mutation
    async def deactivate_user(self, info: Info, id: strawberry.ID, reason: str) -> User:
        principal = await caller(info)
        identity = _identity(info)

        async def run() -> Any:
            async with identity.db.unit_of_work() as session:
                return await identity.service.deactivate_user(session, principal, str(id), reason)

        done = await _admin(info, principal, "user.deactivate", "User", str(id), run)
        if done.change is not None:
            # Returns only once every connected process has dropped the user's sessions.
            await identity.publish([done.change])
        if done.outbox_id is not None and identity.revoker is not None:
            await identity.revoker.deliver_now(
                done.outbox_id, wait_seconds=identity.settings.identity_watch_ack_timeout
            )
        return User.from_view(done.user)


def build_schema() -> strawberry.federation.Schema:
    return SubgraphSchema(
        query=Query,
        mutation=Mutation,
        types=[User, Region],
        extensions=schema_extensions(),
    )


def build_router(
    identity: Identity, *, gate: GatewayGate, development: bool = False
) -> GraphQLRouter[Any, Any]:
    assert identity.verifier is not None
    return subgraph_router(
        build_schema(),
        verifier=identity.verifier,
        services=identity,
        gate=gate,
        development=development,
    )
