"""Automatic logoff rules, with a controlled clock: idle and absolute limits, the strict ceiling
for ADMIN and AUDITOR, and the bounds an administrator may set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from doorward_kit.errors import DoorwardError, ErrorCode
from services.identity.service.session_policy import (
    DEFAULT_POLICY,
    PRIVILEGED_ABSOLUTE_HOURS,
    PRIVILEGED_IDLE_MINUTES,
    SessionPolicy,
    changed_policy,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def test_defaults_are_stricter_for_admins_and_auditors() -> None:
    for roles in (["ADMIN"], ["AUDITOR"], ["TECHNICIAN", "ADMIN"]):
        strict = DEFAULT_POLICY.for_roles(roles)
        assert strict.idle_minutes == PRIVILEGED_IDLE_MINUTES < DEFAULT_POLICY.idle_minutes
        assert strict.absolute_hours == PRIVILEGED_ABSOLUTE_HOURS < DEFAULT_POLICY.absolute_hours
    for roles in (["TECHNICIAN"], ["DISPATCHER"], ["SUBCONTRACTOR"], []):
        assert DEFAULT_POLICY.for_roles(roles) == DEFAULT_POLICY


def test_an_organisation_cannot_loosen_the_privileged_ceiling_but_can_tighten_it() -> None:
    loose = SessionPolicy(idle_minutes=600, absolute_hours=72)
    assert loose.for_roles(["ADMIN"]) == SessionPolicy(
        PRIVILEGED_IDLE_MINUTES, PRIVILEGED_ABSOLUTE_HOURS
    )
    tight = SessionPolicy(idle_minutes=10, absolute_hours=2)
    assert tight.for_roles(["AUDITOR"]) == tight


def test_expiry_idle_and_absolute() -> None:
    policy = SessionPolicy(idle_minutes=30, absolute_hours=8)
    assert policy.expiry(T0, None, T0 + timedelta(minutes=29)) is None
    assert policy.expiry(T0, None, T0 + timedelta(minutes=30)) == "idle_timeout"
    # Kept alive by refreshes, but never past the absolute lifetime.
    last = T0 + timedelta(hours=7, minutes=50)
    assert policy.expiry(T0, last, T0 + timedelta(hours=7, minutes=59)) is None
    assert policy.expiry(T0, last, T0 + timedelta(hours=8)) == "absolute_lifetime"
    assert policy.expiry(T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=31)) == (
        "idle_timeout"
    )


@pytest.mark.parametrize(
    ("idle", "absolute"),
    [(4, 8), (1441, 48), (30, 0), (30, 169), (-1, 8), (120, 1)],
)
def test_bounds(idle: int, absolute: int) -> None:
    with pytest.raises(DoorwardError) as raised:
        changed_policy(DEFAULT_POLICY, idle, absolute)
    assert raised.value.code is ErrorCode.BAD_USER_INPUT


def test_an_omitted_value_stays() -> None:
    assert changed_policy(DEFAULT_POLICY, 30, None) == SessionPolicy(
        30, DEFAULT_POLICY.absolute_hours
    )
    assert changed_policy(DEFAULT_POLICY, None, 4) == SessionPolicy(DEFAULT_POLICY.idle_minutes, 4)
