"""All of identity's SQL. Every query is filtered by organisation, except the two lookups that
come before anybody's organisation is known: login by email and refresh by token hash."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.db import Reader, raw_reader
from services.identity.models import (
    LoginThrottle,
    Organisation,
    RecoveryCode,
    RefreshToken,
    Region,
    SecretsOutbox,
    SessionFamily,
    SessionPolicyRow,
    User,
    UserRegion,
)


class UserFacts(NamedTuple):
    """What a view of a user needs (services/identity/service/identity.py user_view)."""

    id: str
    org_id: str
    email: str
    display_name: str
    roles: list[str]
    status: str
    mfa_enabled: bool


# The statements of identity's hot path (every request's session check, every batch of users)
# as the text asyncpg prepares once per connection, run on the asyncpg connection itself
# (doorward_kit.db RawReader): through SQLAlchemy each cost more CPU than PostgreSQL spent
# running it. Values are parameters. Arrays travel as text[] (roles are varchar(20)[], the
# regions an array_agg of varchar): asyncpg decodes text[] with a built-in codec, where a
# varchar[] cost a catalogue lookup on every new connection.
_SESSION_CHECK = (
    "SELECT u.status, u.session_epoch, f.user_id, f.ended_at FROM users u"
    " LEFT JOIN session_families f ON f.org_id = $1 AND f.id = $3"
    " WHERE u.org_id = $1 AND u.id = $2"
)
_USERS_WITH_REGIONS = (
    "SELECT u.id, u.org_id, u.email, u.display_name, u.roles::text[], u.status, u.mfa_enabled,"
    " (SELECT array_agg(r.region_id)::text[] FROM user_regions r"
    "  WHERE r.org_id = $1 AND r.user_id = u.id)"
    " FROM users u WHERE u.org_id = $1 AND u.id = ANY($2::text[])"
)


# The session check and a batch of users in ONE statement (identity's `_entities` of users and
# `me`: the request's token check and its read, one round trip instead of two). The session
# columns come first, on every row; the users are LEFT JOINed, so a valid session with no user
# found is one row whose user columns are NULL, and an unknown user (no session row) no row.
_SESSION_AND_USERS = (
    "SELECT s.status, s.session_epoch, s.family_user, s.ended_at,"
    " u.id, u.org_id, u.email, u.display_name, u.roles::text[], u.status, u.mfa_enabled,"
    " (SELECT array_agg(r.region_id)::text[] FROM user_regions r"
    "  WHERE r.org_id = $1 AND r.user_id = u.id)"
    " FROM (SELECT su.status, su.session_epoch, f.user_id AS family_user, f.ended_at"
    "  FROM users su LEFT JOIN session_families f ON f.org_id = $1 AND f.id = $3"
    "  WHERE su.org_id = $1 AND su.id = $2) s"
    " LEFT JOIN users u ON u.org_id = $1 AND u.id = ANY($4::text[])"
)

SessionRow = tuple[str, int, str | None, datetime | None]


async def session_check_and_users(
    reader: Reader, org_id: str, user_id: str, family_id: str, user_ids: Iterable[str]
) -> tuple[SessionRow | None, list[tuple[UserFacts, list[str]]]]:
    """session_check and users_with_regions in ONE statement: what the token check needs (None
    when the user does not exist) and the users by id with their region ids. The caller must
    look at the session first and use nothing else when it is not current."""
    raw = await raw_reader(reader)
    rows = await raw.fetch(_SESSION_AND_USERS, org_id, user_id, family_id, list(user_ids))
    if not rows:
        return None, []
    first = rows[0]
    state: SessionRow = (first[0], int(first[1]), first[2], first[3])
    users = [
        (UserFacts(r[4], r[5], r[6], r[7], r[8], r[9], r[10]), sorted(r[11] or []))
        for r in rows
        if r[4] is not None
    ]
    return state, users


async def users_with_regions(
    reader: Reader, org_id: str, user_ids: Iterable[str]
) -> list[tuple[UserFacts, list[str]]]:
    """Users by id with their region ids, in ONE query (a federation batch of assignees is one
    round trip): the regions come as an array from a correlated subquery. One array parameter,
    so every batch size shares one prepared statement; the columns a view needs only (no
    password hash, no MFA secret), as plain rows, no ORM objects."""
    ids = list(user_ids)
    if not ids:
        return []
    raw = await raw_reader(reader)
    rows = await raw.fetch(_USERS_WITH_REGIONS, org_id, ids)
    # array_agg over no rows is NULL: a user without regions.
    return [(UserFacts(r[0], r[1], r[2], r[3], r[4], r[5], r[6]), sorted(r[7] or [])) for r in rows]


async def session_check(
    reader: Reader, org_id: str, user_id: str, family_id: str
) -> tuple[str, int, str | None, datetime | None] | None:
    """What a token check needs, in ONE query (it runs on every request that reaches identity):
    the user's status and session epoch, and the session family's owner and end (both None when
    the family does not exist)."""
    raw = await raw_reader(reader)
    row = await raw.fetchrow(_SESSION_CHECK, org_id, user_id, family_id)
    return (row[0], int(row[1]), row[2], row[3]) if row else None


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def flush(self) -> None:
        await self.session.flush()

    # ---- organisations ------------------------------------------------------------------------

    async def add_org(self, org: Organisation) -> None:
        self.session.add(org)
        await self.session.flush()

    async def org(self, org_id: str) -> Organisation | None:
        return await self.session.get(Organisation, org_id)

    async def org_by_name(self, name: str) -> Organisation | None:
        return (
            await self.session.execute(select(Organisation).where(Organisation.name == name))
        ).scalar_one_or_none()

    # ---- regions ------------------------------------------------------------------------------

    async def add_region(self, region: Region) -> None:
        self.session.add(region)
        await self.session.flush()

    async def region_by_name(self, org_id: str, name: str) -> Region | None:
        query = select(Region).where(Region.org_id == org_id, Region.name == name)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def regions(self, org_id: str, only: Iterable[str] | None = None) -> Sequence[Region]:
        query = select(Region).where(Region.org_id == org_id)
        if only is not None:
            query = query.where(Region.id.in_(list(only)))
        return (await self.session.execute(query.order_by(Region.name, Region.id))).scalars().all()

    # ---- users --------------------------------------------------------------------------------

    async def add_user(self, user: User, region_ids: Iterable[str]) -> None:
        self.session.add(user)
        await self.session.flush()
        await self.set_user_regions(user.org_id, user.id, region_ids)

    async def user(self, org_id: str, user_id: str, *, for_update: bool = False) -> User | None:
        query = select(User).where(User.org_id == org_id, User.id == user_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def user_by_email(self, email: str, *, for_update: bool = False) -> User | None:
        # Login only: the one lookup across organisations (an email is a global login name).
        query = select(User).where(User.email == email)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def email_taken(self, email: str) -> bool:
        query = select(User.id).where(User.email == email)
        return (await self.session.execute(query)).first() is not None

    async def users(
        self,
        org_id: str,
        *,
        region_ids: Iterable[str] | None = None,
        role: str | None = None,
        user_ids: Iterable[str] | None = None,
    ) -> Sequence[User]:
        query = select(User).where(User.org_id == org_id)
        if region_ids is not None:
            member = select(UserRegion.user_id).where(
                UserRegion.org_id == org_id, UserRegion.region_id.in_(list(region_ids))
            )
            query = query.where(User.id.in_(member))
        if role is not None:
            query = query.where(User.roles.any(role))  # type: ignore[arg-type]
        if user_ids is not None:
            query = query.where(User.id.in_(list(user_ids)))
        query = query.order_by(User.display_name, User.id)
        return (await self.session.execute(query)).scalars().all()

    async def users_with_regions(
        self, org_id: str, user_ids: Iterable[str]
    ) -> list[tuple[UserFacts, list[str]]]:
        return await users_with_regions(self.session, org_id, user_ids)

    async def region_ids_of(self, org_id: str, user_ids: Iterable[str]) -> dict[str, list[str]]:
        ids = list(user_ids)
        result: dict[str, list[str]] = {user_id: [] for user_id in ids}
        if not ids:
            return result
        query = (
            select(UserRegion.user_id, UserRegion.region_id)
            .where(UserRegion.org_id == org_id, UserRegion.user_id.in_(ids))
            .order_by(UserRegion.region_id)
        )
        for user_id, region_id in (await self.session.execute(query)).all():
            result[user_id].append(region_id)
        return result

    async def set_user_regions(self, org_id: str, user_id: str, region_ids: Iterable[str]) -> None:
        await self.session.execute(
            delete(UserRegion).where(UserRegion.org_id == org_id, UserRegion.user_id == user_id)
        )
        for region_id in sorted(set(region_ids)):
            self.session.add(UserRegion(user_id=user_id, region_id=region_id, org_id=org_id))
        await self.session.flush()

    async def bump_epoch(self, org_id: str, user_id: str) -> int:
        result = await self.session.execute(
            update(User)
            .where(User.org_id == org_id, User.id == user_id)
            .values(session_epoch=User.session_epoch + 1)
            .returning(User.session_epoch)
        )
        return int(result.scalar_one())

    async def session_state(self, org_id: str, user_id: str) -> tuple[str, int] | None:
        query = select(User.status, User.session_epoch).where(
            User.org_id == org_id, User.id == user_id
        )
        row = (await self.session.execute(query)).first()
        return (row[0], int(row[1])) if row else None

    async def session_check(
        self, org_id: str, user_id: str, family_id: str
    ) -> tuple[str, int, str | None, datetime | None] | None:
        return await session_check(self.session, org_id, user_id, family_id)

    # ---- recovery codes -----------------------------------------------------------------------

    async def replace_recovery_codes(self, org_id: str, user_id: str, hashes: list[str]) -> None:
        await self.session.execute(
            delete(RecoveryCode).where(
                RecoveryCode.org_id == org_id, RecoveryCode.user_id == user_id
            )
        )
        for code_hash in hashes:
            self.session.add(RecoveryCode(org_id=org_id, user_id=user_id, code_hash=code_hash))
        await self.session.flush()

    async def use_recovery_code(
        self, org_id: str, user_id: str, code_hash: str, now: datetime
    ) -> bool:
        result = await self.session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.org_id == org_id,
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == code_hash,
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .returning(RecoveryCode.id)
        )
        return result.first() is not None

    # ---- sessions -----------------------------------------------------------------------------

    async def add_family(self, family: SessionFamily) -> None:
        self.session.add(family)
        await self.session.flush()

    async def family(self, org_id: str, family_id: str) -> SessionFamily | None:
        query = select(SessionFamily).where(
            SessionFamily.org_id == org_id, SessionFamily.id == family_id
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def session_policy(self, org_id: str) -> SessionPolicyRow | None:
        return await self.session.get(SessionPolicyRow, org_id)

    async def save_session_policy(
        self, org_id: str, idle_minutes: int, absolute_hours: int, updated_by: str
    ) -> None:
        values = {
            "idle_minutes": idle_minutes,
            "absolute_hours": absolute_hours,
            "updated_by": updated_by,
            "updated_at": func.now(),
        }
        await self.session.execute(
            insert(SessionPolicyRow)
            .values(org_id=org_id, **values)
            .on_conflict_do_update(index_elements=[SessionPolicyRow.org_id], set_=values)
        )

    async def end_family(self, org_id: str, family_id: str, reason: str, now: datetime) -> bool:
        result = await self.session.execute(
            update(SessionFamily)
            .where(
                SessionFamily.org_id == org_id,
                SessionFamily.id == family_id,
                SessionFamily.ended_at.is_(None),
            )
            .values(ended_at=now, end_reason=reason)
            .returning(SessionFamily.id)
        )
        return result.first() is not None

    async def end_all_families(self, org_id: str, user_id: str, reason: str, now: datetime) -> int:
        result = await self.session.execute(
            update(SessionFamily)
            .where(
                SessionFamily.org_id == org_id,
                SessionFamily.user_id == user_id,
                SessionFamily.ended_at.is_(None),
            )
            .values(ended_at=now, end_reason=reason)
            .returning(SessionFamily.id)
        )
        return len(result.all())

    async def add_refresh_token(self, token: RefreshToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def refresh_token(self, token_hash: str) -> RefreshToken | None:
        # Refresh only: the token hash is the credential, the org is learnt from the row.
        query = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def mark_refresh_used(self, org_id: str, token_hash: str, now: datetime) -> bool:
        result = await self.session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.org_id == org_id,
                RefreshToken.token_hash == token_hash,
                RefreshToken.used_at.is_(None),
            )
            .values(used_at=now)
            .returning(RefreshToken.token_hash)
        )
        return result.first() is not None

    # ---- login throttle -----------------------------------------------------------------------

    async def throttles(self, keys: Iterable[str]) -> Sequence[LoginThrottle]:
        query = select(LoginThrottle).where(LoginThrottle.key.in_(list(keys)))
        return (await self.session.execute(query)).scalars().all()

    async def count_failure(self, key: str, now: float, window: float) -> int:
        """Atomically add one failure (forgetting old ones); returns the new count."""
        insert_stmt = insert(LoginThrottle).values(
            key=key, failures=1, last_failure_at=now, blocked_until=0.0
        )
        stale = LoginThrottle.last_failure_at < now - window
        statement = insert_stmt.on_conflict_do_update(
            index_elements=[LoginThrottle.key],
            set_={
                "failures": case((stale, 1), else_=LoginThrottle.failures + 1),
                "last_failure_at": now,
            },
        ).returning(LoginThrottle.failures)
        return int((await self.session.execute(statement)).scalar_one())

    async def block(self, key: str, until: float) -> None:
        await self.session.execute(
            update(LoginThrottle).where(LoginThrottle.key == key).values(blocked_until=until)
        )

    async def clear_throttle(self, key: str) -> None:
        await self.session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))

    # ---- secrets outbox -----------------------------------------------------------------------

    async def add_outbox(self, row: SecretsOutbox) -> None:
        self.session.add(row)
        await self.session.flush()

    async def due_outbox(self, now: float, limit: int = 50) -> Sequence[SecretsOutbox]:
        # Crosses organisations on purpose: the sender delivers for every org.
        query = (
            select(SecretsOutbox)
            .where(SecretsOutbox.delivered_at.is_(None), SecretsOutbox.next_attempt_at <= now)
            .order_by(SecretsOutbox.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(query)).scalars().all()

    async def outbox_rows(self, ids: Iterable[str]) -> Sequence[SecretsOutbox]:
        query = (
            select(SecretsOutbox)
            .where(SecretsOutbox.id.in_(list(ids)), SecretsOutbox.delivered_at.is_(None))
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(query)).scalars().all()
