"""All SQL of the secrets service. Every query is filtered by organisation, except the
sweeper's, which only touches Vault-side bookkeeping of rows that are already finished."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.db import Reader, raw_reader
from services.secrets.models import Grant, RateCounter, SecretRef, UploadSlot


async def get_ref(
    session: AsyncSession, org_id: str, ref_id: str, *, for_update: bool = False
) -> SecretRef | None:
    query = select(SecretRef).where(
        SecretRef.org_id == org_id, SecretRef.id == ref_id, SecretRef.deleted_at.is_(None)
    )
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


@dataclass(frozen=True)
class RefRow:
    """What a secret reference shows other services (no Vault path)."""

    id: str
    org_id: str
    site_id: str
    region_id: str
    kind: str
    label: str
    version: int
    updated_at: datetime


# The text asyncpg prepares once per connection, run on the asyncpg connection itself
# (doorward_kit.db RawReader): a board asks for its secret references on every request, and
# through SQLAlchemy the statement's execution cost more CPU than PostgreSQL spent on it. Plain
# columns (RefRow's, in its order), no ORM objects; the id lists are text[] parameters (the
# same text whatever their length, and a type asyncpg has built in: varchar[] cost a
# catalogue lookup on every new connection).
_LIST_REFS = (
    "SELECT id, org_id, site_id, region_id, kind, label, version, updated_at FROM secret_refs"
    " WHERE org_id = $1 AND deleted_at IS NULL"
    " AND (id = ANY($2::text[]) OR site_id = ANY($3::text[]))"
    " ORDER BY site_id, label, id"
)


async def list_refs(
    reader: Reader, org_id: str, ref_ids: Sequence[str], site_ids: Sequence[str]
) -> list[RefRow]:
    if not ref_ids and not site_ids:
        return []
    raw = await raw_reader(reader)
    rows = await raw.fetch(_LIST_REFS, org_id, list(ref_ids), list(site_ids))
    return [RefRow(*row) for row in rows]


async def site_refs(session: AsyncSession, org_id: str, site_id: str) -> list[SecretRef]:
    query = (
        select(SecretRef)
        .where(
            SecretRef.org_id == org_id,
            SecretRef.site_id == site_id,
            SecretRef.deleted_at.is_(None),
        )
        .with_for_update()
    )
    return list((await session.execute(query)).scalars())


async def get_slot_for_update(
    session: AsyncSession, org_id: str, slot_id: str
) -> UploadSlot | None:
    query = (
        select(UploadSlot)
        .where(UploadSlot.org_id == org_id, UploadSlot.id == slot_id)
        .with_for_update()
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_grant_for_update(session: AsyncSession, org_id: str, grant_id: str) -> Grant | None:
    query = select(Grant).where(Grant.org_id == org_id, Grant.id == grant_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def revoke_grants(
    session: AsyncSession,
    org_id: str,
    *,
    now: datetime,
    reason: str,
    work_order_id: str | None = None,
    user_id: str | None = None,
    site_id: str | None = None,
    grant_id: str | None = None,
) -> list[tuple[str, str, str, str, str]]:
    """Revoke open grants; returns (id, accessor, user_id, work_order_id, secret_ref_id)."""
    target = [Grant.org_id == org_id]
    if work_order_id is not None:
        target.append(Grant.work_order_id == work_order_id)
    if user_id is not None:
        target.append(Grant.user_id == user_id)
    if site_id is not None:
        target.append(Grant.site_id == site_id)
    if grant_id is not None:
        target.append(Grant.id == grant_id)
    if len(target) == 1:
        raise ValueError("revoke_grants needs a target")
    result = await session.execute(
        update(Grant)
        .where(
            *target,
            Grant.used_at.is_(None),
            Grant.revoked_at.is_(None),
            Grant.expires_at > now,
        )
        .values(revoked_at=now, revoke_reason=reason)
        .returning(
            Grant.id, Grant.wrap_accessor, Grant.user_id, Grant.work_order_id, Grant.secret_ref_id
        )
    )
    return [tuple(row) for row in result.all()]  # type: ignore[misc]


async def revoke_slots(
    session: AsyncSession,
    org_id: str,
    *,
    now: datetime,
    reason: str,
    user_id: str | None = None,
    site_id: str | None = None,
) -> list[tuple[str, str]]:
    """Revoke open upload slots; returns (id, accessor)."""
    target = [UploadSlot.org_id == org_id]
    if user_id is not None:
        target.append(UploadSlot.user_id == user_id)
    if site_id is not None:
        target.append(UploadSlot.site_id == site_id)
    if len(target) == 1:
        raise ValueError("revoke_slots needs a target")
    result = await session.execute(
        update(UploadSlot)
        .where(
            *target,
            UploadSlot.used_at.is_(None),
            UploadSlot.revoked_at.is_(None),
            UploadSlot.expires_at > now,
        )
        .values(revoked_at=now, revoke_reason=reason)
        .returning(UploadSlot.id, UploadSlot.wrap_accessor)
    )
    return [(str(row[0]), str(row[1])) for row in result.all()]


async def mark_clean(
    session: AsyncSession, *, grant_ids: Sequence[str] = (), slot_ids: Sequence[str] = ()
) -> None:
    if grant_ids:
        await session.execute(
            update(Grant).where(Grant.id.in_(list(grant_ids))).values(vault_clean=True)
        )
    if slot_ids:
        await session.execute(
            update(UploadSlot).where(UploadSlot.id.in_(list(slot_ids))).values(vault_clean=True)
        )


async def unclean_grants(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[str, str, bool]]:
    """Finished grants whose Vault token may remain: (id, accessor, consumed by unwrap)."""
    return [(g.id, g.accessor, g.consumed) for g in await unclean_grant_rows(session, now, limit)]


@dataclass(frozen=True)
class FinishedGrant:
    id: str
    accessor: str
    consumed: bool
    # Ended by its clock alone: neither used nor revoked (the sweeper reports it as expired).
    expired: bool
    org_id: str
    user_id: str
    work_order_id: str
    secret_ref_id: str


async def unclean_grant_rows(
    session: AsyncSession, now: datetime, limit: int
) -> list[FinishedGrant]:
    """Finished grants whose Vault token may remain, with what an expiry event names."""
    query = (
        select(
            Grant.id,
            Grant.wrap_accessor,
            Grant.used_at.is_not(None),
            and_(Grant.used_at.is_(None), Grant.revoked_at.is_(None)),
            Grant.org_id,
            Grant.user_id,
            Grant.work_order_id,
            Grant.secret_ref_id,
        )
        .where(
            Grant.vault_clean.is_(False),
            or_(
                Grant.used_at.is_not(None),
                Grant.revoked_at.is_not(None),
                Grant.expires_at <= now,
            ),
        )
        .order_by(Grant.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [
        FinishedGrant(str(r[0]), str(r[1]), bool(r[2]), bool(r[3]), *map(str, r[4:8]))
        for r in (await session.execute(query)).all()
    ]


async def count_active_grants(session: AsyncSession, now: datetime) -> int:
    """Grants issued and still usable, every organisation (the active-grants gauge)."""
    query = select(func.count()).where(
        Grant.used_at.is_(None), Grant.revoked_at.is_(None), Grant.expires_at > now
    )
    return int((await session.execute(query)).scalar_one())


async def ended_grants(
    session: AsyncSession,
    org_id: str,
    before: datetime,
    limit: int,
    *,
    held_site_ids: Sequence[str] = (),
    held_work_order_ids: Sequence[str] = (),
) -> list[str]:
    """The organisation's grants that ended (used, revoked or expired) before `before` and whose
    Vault token is gone (swept, or its wrap TTL ended long ago), locked with SKIP LOCKED.
    Break-glass grants stay: their row is the guard against reusing an approved request."""
    ended = func.least(
        Grant.expires_at,
        func.coalesce(Grant.used_at, Grant.expires_at),
        func.coalesce(Grant.revoked_at, Grant.expires_at),
    )
    query = (
        select(Grant.id)
        .where(
            Grant.org_id == org_id,
            ended < before,
            or_(Grant.vault_clean.is_(True), Grant.expires_at < before),
            Grant.break_glass.is_(False),
            Grant.break_glass_request_id.is_(None),
        )
        .order_by(ended, Grant.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if held_site_ids:
        query = query.where(Grant.site_id.not_in(list(held_site_ids)))
    if held_work_order_ids:
        query = query.where(Grant.work_order_id.not_in(list(held_work_order_ids)))
    return [str(r[0]) for r in (await session.execute(query)).all()]


async def delete_grants(session: AsyncSession, org_id: str, grant_ids: Sequence[str]) -> int:
    if not grant_ids:
        return 0
    result = await session.execute(
        delete(Grant).where(Grant.org_id == org_id, Grant.id.in_(list(grant_ids)))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def unclean_slots(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[str, str, bool]]:
    query = (
        select(UploadSlot.id, UploadSlot.wrap_accessor, UploadSlot.used_at.is_not(None))
        .where(
            UploadSlot.vault_clean.is_(False),
            or_(
                UploadSlot.used_at.is_not(None),
                UploadSlot.revoked_at.is_not(None),
                UploadSlot.expires_at <= now,
            ),
        )
        .order_by(UploadSlot.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [(str(r[0]), str(r[1]), bool(r[2])) for r in (await session.execute(query)).all()]


# ---- per-user limits ------------------------------------------------------------------------


async def lock_user(session: AsyncSession, org_id: str, user_id: str) -> None:
    """Serialise one user's grant/slot creation until the transaction ends, so that the count
    below and the insert after it cannot race with another request of the same user."""
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"{org_id}/{user_id}", 0)))
    )


async def count_open_grants(session: AsyncSession, org_id: str, user_id: str, now: datetime) -> int:
    query = select(func.count()).where(
        Grant.org_id == org_id,
        Grant.user_id == user_id,
        Grant.used_at.is_(None),
        Grant.revoked_at.is_(None),
        Grant.expires_at > now,
    )
    return int((await session.execute(query)).scalar_one())


async def count_open_slots(session: AsyncSession, org_id: str, user_id: str, now: datetime) -> int:
    query = select(func.count()).where(
        UploadSlot.org_id == org_id,
        UploadSlot.user_id == user_id,
        UploadSlot.used_at.is_(None),
        UploadSlot.revoked_at.is_(None),
        UploadSlot.expires_at > now,
    )
    return int((await session.execute(query)).scalar_one())


async def break_glass_used(session: AsyncSession, request_id: str) -> bool:
    """Has a grant been issued for this break-glass request (in any organisation)?"""
    query = select(Grant.id).where(Grant.break_glass_request_id == request_id)
    return (await session.execute(query)).first() is not None


# ---- rate limits shared by the replicas ------------------------------------------------------


async def count_hit(
    session: AsyncSession, key: str, window_start: int, previous_start: int
) -> tuple[int, int]:
    """Count one request of `key` in the window starting at `window_start`; returns (hits in
    this window, hits in the previous one). Older windows of the key are dropped on the way."""
    counted = (
        insert(RateCounter)
        .values(key=key, window_start=window_start, hits=1)
        .on_conflict_do_update(
            index_elements=[RateCounter.key, RateCounter.window_start],
            set_={"hits": RateCounter.hits + 1},
        )
        .returning(RateCounter.hits)
    )
    hits = int((await session.execute(counted)).scalar_one())
    previous = await session.scalar(
        select(RateCounter.hits).where(
            RateCounter.key == key, RateCounter.window_start == previous_start
        )
    )
    await session.execute(
        delete(RateCounter).where(RateCounter.key == key, RateCounter.window_start < previous_start)
    )
    return hits, int(previous or 0)


async def forget_rate_windows(session: AsyncSession, before: int) -> None:
    """Drop every key's windows that started before `before` (idle users' leftovers)."""
    await session.execute(delete(RateCounter).where(RateCounter.window_start < before))
