"""Automatic logoff against the real identity service and PostgreSQL. The clock is controlled by
dating sessions back in the database (a session `created` / `last used` N minutes ago), so each
test runs in seconds. Both sides: the idle or too-old session ends (with its access tokens, and
on the trail), the fresh one keeps working; only ADMIN changes the policy (AUDITOR may read it:
tests/unit/kit/test_policy.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from doorward.audit.v1 import audit_pb2
from sqlalchemy import update

from services.identity.models import RefreshToken, SessionFamily
from services.identity.service.tokens import hash_refresh_token, new_refresh_token
from tests.integration.identity.conftest import (
    Org,
    Running,
    create_staff,
    db_of,
    error_code,
    eventually,
    new_org,
)

pytestmark = pytest.mark.integration

ME = "{ me { id } }"
REFRESH = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken } }"
POLICY = """{ sessionPolicy { idleMinutes absoluteHours privilegedIdleMinutes
  privilegedAbsoluteHours } }"""
UPDATE = """mutation($i: Int, $a: Int) { updateSessionPolicy(idleMinutes: $i, absoluteHours: $a) {
  idleMinutes absoluteHours privilegedIdleMinutes privilegedAbsoluteHours } }"""


async def _date_back(
    running: Running, refresh_token: str, *, created: timedelta, last_used: timedelta
) -> str:
    """Make the session of this refresh token look `created` ago and last used `last_used` ago."""
    now = datetime.now(UTC)
    async with db_of(running).unit_of_work() as session:
        row = await session.get(RefreshToken, hash_refresh_token(refresh_token))
        assert row is not None
        await session.execute(
            update(SessionFamily)
            .where(SessionFamily.id == row.family_id)
            .values(created_at=now - created, last_used_at=now - last_used)
        )
        return row.family_id


async def _admin_session(
    running: Running, org: Org, *, created: timedelta, last_used: timedelta
) -> str:
    """A refresh token of the organisation's ADMIN (whose logins need a one-time code)."""
    now = datetime.now(UTC)
    token = new_refresh_token()
    family_id = str(uuid.uuid4())
    async with db_of(running).unit_of_work() as session:
        session.add(
            SessionFamily(
                id=family_id,
                org_id=org.id,
                user_id=org.admin_id,
                scope="full",
                created_at=now - created,
                last_used_at=now - last_used,
                expires_at=now + timedelta(hours=1),
            )
        )
        await session.flush()
        session.add(
            RefreshToken(
                token_hash=hash_refresh_token(token),
                family_id=family_id,
                org_id=org.id,
                user_id=org.admin_id,
                expires_at=now + timedelta(hours=1),
            )
        )
    return token


def _expired(running: Running, org: Org, reason: str) -> list[audit_pb2.AuditEvent]:
    return [
        e
        for e in running.audit.of("auth.session.expire", org.id)
        if e.details.get("reason") == reason
    ]


async def test_defaults_and_who_may_read_or_change_them(running: Running, org: Org) -> None:
    body = await running.gql(POLICY, token=org.admin_token)
    assert body["data"]["sessionPolicy"] == {
        "idleMinutes": 120,
        "absoluteHours": 12,
        "privilegedIdleMinutes": 15,
        "privilegedAbsoluteHours": 8,
    }
    tech = await create_staff(running, org, ["TECHNICIAN"], [])
    dispatcher = await create_staff(running, org, ["DISPATCHER"], [])
    for person in (tech, dispatcher):
        assert error_code(await running.gql(POLICY, token=person.token)) == "FORBIDDEN"
        body = await running.gql(UPDATE, {"i": 600}, token=person.token)
        assert error_code(body) == "FORBIDDEN"
    await eventually(
        lambda: (
            [e.outcome for e in running.audit.of("org.session_policy.update", org.id)]
            == [audit_pb2.DENIED, audit_pb2.DENIED]
        )
    )
    body = await running.gql(UPDATE, {"i": 4}, token=org.admin_token)
    assert error_code(body) == "BAD_USER_INPUT"

    body = await running.gql(UPDATE, {"i": 30, "a": 10}, token=org.admin_token)
    assert body["data"]["updateSessionPolicy"] == {
        "idleMinutes": 30,
        "absoluteHours": 10,
        "privilegedIdleMinutes": 15,
        "privilegedAbsoluteHours": 8,
    }
    body = await running.gql(UPDATE, {"a": 4}, token=org.admin_token)
    assert body["data"]["updateSessionPolicy"]["idleMinutes"] == 30
    assert body["data"]["updateSessionPolicy"]["privilegedAbsoluteHours"] == 4
    await eventually(
        lambda: (
            [e.outcome for e in running.audit.of("org.session_policy.update", org.id)].count(
                audit_pb2.ALLOWED
            )
            == 2
        )
    )
    # Per organisation: another one still has the defaults.
    other = await running.gql(POLICY, token=(await new_org(running)).admin_token)
    assert other["data"]["sessionPolicy"]["idleMinutes"] == 120


async def test_an_idle_session_ends_at_refresh(running: Running, org: Org) -> None:
    tech = await create_staff(running, org, ["TECHNICIAN"], [])
    fresh = await create_staff(running, org, ["TECHNICIAN"], [])
    # Idle for 2 hours and a minute (default 120 minutes): gone, with its access token.
    family = await _date_back(
        running, tech.refresh_token, created=timedelta(hours=3), last_used=timedelta(minutes=121)
    )
    assert error_code(await running.gql(REFRESH, {"t": tech.refresh_token})) == "UNAUTHENTICATED"
    assert error_code(await running.gql(ME, token=tech.token)) == "UNAUTHENTICATED"
    await eventually(lambda: len(_expired(running, org, "idle_timeout")) == 1)
    event = _expired(running, org, "idle_timeout")[0]
    assert event.target_id == family and event.actor_id == tech.id
    # Idle for less: the refresh works and counts as use.
    await _date_back(
        running, fresh.refresh_token, created=timedelta(hours=3), last_used=timedelta(minutes=110)
    )
    body = await running.gql(REFRESH, {"t": fresh.refresh_token})
    assert "errors" not in body, body
    rotated = body["data"]["refresh"]
    assert (await running.gql(ME, token=rotated["accessToken"]))["data"]["me"]["id"] == fresh.id
    assert "errors" not in await running.gql(REFRESH, {"t": rotated["refreshToken"]})


async def test_a_session_ends_at_its_absolute_lifetime(running: Running, org: Org) -> None:
    tech = await create_staff(running, org, ["TECHNICIAN"], [])
    # Refreshed a minute ago, but logged in 12 hours ago.
    await _date_back(
        running, tech.refresh_token, created=timedelta(hours=12), last_used=timedelta(minutes=1)
    )
    assert error_code(await running.gql(REFRESH, {"t": tech.refresh_token})) == "UNAUTHENTICATED"
    await eventually(lambda: len(_expired(running, org, "absolute_lifetime")) == 1)


async def test_admin_sessions_are_stricter(running: Running, org: Org) -> None:
    # 16 idle minutes: too long for an ADMIN, fine for a technician.
    admin_token = await _admin_session(
        running, org, created=timedelta(minutes=20), last_used=timedelta(minutes=16)
    )
    assert error_code(await running.gql(REFRESH, {"t": admin_token})) == "UNAUTHENTICATED"
    await eventually(lambda: len(_expired(running, org, "idle_timeout")) == 1)
    tech = await create_staff(running, org, ["TECHNICIAN"], [])
    await _date_back(
        running, tech.refresh_token, created=timedelta(minutes=20), last_used=timedelta(minutes=16)
    )
    assert "errors" not in await running.gql(REFRESH, {"t": tech.refresh_token})
    # An ADMIN refreshing within 15 minutes keeps the session.
    admin_token = await _admin_session(
        running, org, created=timedelta(minutes=20), last_used=timedelta(minutes=10)
    )
    assert "errors" not in await running.gql(REFRESH, {"t": admin_token})
    # And never past 8 hours, whatever the organisation set for everybody.
    await running.gql(UPDATE, {"a": 48}, token=org.admin_token)
    admin_token = await _admin_session(
        running, org, created=timedelta(hours=8), last_used=timedelta(minutes=1)
    )
    assert error_code(await running.gql(REFRESH, {"t": admin_token})) == "UNAUTHENTICATED"
    await eventually(lambda: len(_expired(running, org, "absolute_lifetime")) == 1)
