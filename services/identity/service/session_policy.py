"""Automatic logoff (HIPAA §164.312(a)(2)(iii), GDPR Art. 32): how long a session (a refresh-token
family) may stay unused, and how long it may live at all, per organisation.

An organisation sets one idle timeout and one absolute lifetime for everybody; sessions of the
roles that see the most (ADMIN, AUDITOR) never get more than the strict limits below, whatever the
organisation sets. Enforced when a session is refreshed: access tokens live at most 10 minutes,
so an idle or expired session stops working within one access-token lifetime.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from doorward_kit.auth import Role
from doorward_kit.errors import bad_input

# Defaults for everybody: a field technician's shift, a couple of hours between visits.
DEFAULT_IDLE_MINUTES = 120
DEFAULT_ABSOLUTE_HOURS = 12
# The ceiling for ADMIN and AUDITOR sessions.
PRIVILEGED_IDLE_MINUTES = 15
PRIVILEGED_ABSOLUTE_HOURS = 8
PRIVILEGED_ROLES = frozenset({Role.ADMIN.value, Role.AUDITOR.value})
# Bounds an administrator may set.
MIN_IDLE_MINUTES = 5
MAX_IDLE_MINUTES = 24 * 60
MIN_ABSOLUTE_HOURS = 1
MAX_ABSOLUTE_HOURS = 7 * 24


@dataclass(frozen=True)
class SessionPolicy:
    idle_minutes: int
    absolute_hours: int

    @property
    def privileged(self) -> SessionPolicy:
        """What ADMIN and AUDITOR sessions get: the organisation's values, never more than the
        strict ceiling."""
        return SessionPolicy(
            min(self.idle_minutes, PRIVILEGED_IDLE_MINUTES),
            min(self.absolute_hours, PRIVILEGED_ABSOLUTE_HOURS),
        )

    def for_roles(self, roles: Iterable[str]) -> SessionPolicy:
        return self.privileged if PRIVILEGED_ROLES & set(roles) else self

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.idle_minutes)

    @property
    def absolute(self) -> timedelta:
        return timedelta(hours=self.absolute_hours)

    def expiry(
        self, created_at: datetime, last_used_at: datetime | None, now: datetime
    ) -> str | None:
        """Why a session used now has ended ('absolute_lifetime' or 'idle_timeout'), or None."""
        if now >= created_at + self.absolute:
            return "absolute_lifetime"
        if now >= (last_used_at or created_at) + self.idle:
            return "idle_timeout"
        return None


DEFAULT_POLICY = SessionPolicy(DEFAULT_IDLE_MINUTES, DEFAULT_ABSOLUTE_HOURS)


def changed_policy(
    current: SessionPolicy, idle_minutes: int | None, absolute_hours: int | None
) -> SessionPolicy:
    """The policy after an update (None keeps a value), checked against the bounds."""
    idle = current.idle_minutes if idle_minutes is None else idle_minutes
    absolute = current.absolute_hours if absolute_hours is None else absolute_hours
    if not MIN_IDLE_MINUTES <= idle <= MAX_IDLE_MINUTES:
        raise bad_input(f"idleMinutes must be {MIN_IDLE_MINUTES}..{MAX_IDLE_MINUTES}")
    if not MIN_ABSOLUTE_HOURS <= absolute <= MAX_ABSOLUTE_HOURS:
        raise bad_input(f"absoluteHours must be {MIN_ABSOLUTE_HOURS}..{MAX_ABSOLUTE_HOURS}")
    if idle > absolute * 60:
        raise bad_input("idleMinutes must not be longer than absoluteHours")
    return SessionPolicy(idle, absolute)
