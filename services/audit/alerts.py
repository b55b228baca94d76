"""Security alert rules over the event stream. Pure: the service counts, these decide.

Rules (each alert also becomes a `security.alert` event on the trail):
- many_reveals: one user revealed at least `reveals` secrets within `reveal_window` seconds;
- repeated_denials: one user was refused at least `denials` times within `denial_window` seconds;
- outside_window: a secret access was refused because the job's window was closed
  (action secret.access.denied with details reason=outside_window);
- break_glass: any secret.break_glass;
- deactivated_user_activity: an event by a user after their user.deactivate.
Alerts are deduplicated per rule, user and time bucket (or per event for per-event rules).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

ALERT_ACTION = "security.alert"
REVEAL_ACTION = "secret.reveal"
ACCESS_DENIED_ACTION = "secret.access.denied"
BREAK_GLASS_ACTION = "secret.break_glass"
DEACTIVATE_ACTION = "user.deactivate"
DEACTIVATED_BUCKET_SECONDS = 3600


class Rule(enum.StrEnum):
    MANY_REVEALS = "many_reveals"
    REPEATED_DENIALS = "repeated_denials"
    OUTSIDE_WINDOW = "outside_window"
    BREAK_GLASS = "break_glass"
    DEACTIVATED_USER_ACTIVITY = "deactivated_user_activity"
    INTEGRITY_BROKEN = "integrity_broken"


@dataclass(frozen=True)
class AlertRules:
    reveals: int = 20
    reveal_window: int = 3600
    denials: int = 5
    denial_window: int = 900


@dataclass(frozen=True)
class Candidate:
    rule: Rule
    actor_id: str
    trigger_event_id: str
    occurred_at: datetime
    dedup_key: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventFacts:
    """What the rules look at (no payload beyond ids and enums)."""

    id: str
    actor_id: str
    action: str
    outcome: str
    occurred_at: datetime
    details: dict[str, str]


def _bucket(moment: datetime, seconds: int) -> int:
    return int(moment.timestamp()) // seconds


def watched(event: EventFacts) -> bool:
    """Alert events themselves never trigger rules (no alert storms about alerts)."""
    return event.action != ALERT_ACTION


def per_event(event: EventFacts) -> list[Candidate]:
    found: list[Candidate] = []
    if event.action == ACCESS_DENIED_ACTION and event.details.get("reason") == "outside_window":
        found.append(
            Candidate(
                Rule.OUTSIDE_WINDOW,
                event.actor_id,
                event.id,
                event.occurred_at,
                f"{Rule.OUTSIDE_WINDOW}:{event.id}",
            )
        )
    if event.action == BREAK_GLASS_ACTION or event.action.startswith(BREAK_GLASS_ACTION + "."):
        found.append(
            Candidate(
                Rule.BREAK_GLASS,
                event.actor_id,
                event.id,
                event.occurred_at,
                f"{Rule.BREAK_GLASS}:{event.id}",
            )
        )
    return found


def counts_as_reveal(event: EventFacts) -> bool:
    return bool(event.actor_id) and event.action == REVEAL_ACTION and event.outcome == "ALLOWED"


def counts_as_denial(event: EventFacts) -> bool:
    return bool(event.actor_id) and event.outcome == "DENIED"


def _threshold(
    rule: Rule, event: EventFacts, count: int, threshold: int, window: int
) -> Candidate | None:
    if count < threshold:
        return None
    return Candidate(
        rule,
        event.actor_id,
        event.id,
        event.occurred_at,
        f"{rule}:{event.actor_id}:{_bucket(event.occurred_at, window)}",
        {"count": str(count), "threshold": str(threshold), "window_seconds": str(window)},
    )


def many_reveals(event: EventFacts, count: int, rules: AlertRules) -> Candidate | None:
    """`count`: the actor's reveals in (occurred_at - reveal_window, occurred_at]."""
    return _threshold(Rule.MANY_REVEALS, event, count, rules.reveals, rules.reveal_window)


def repeated_denials(event: EventFacts, count: int, rules: AlertRules) -> Candidate | None:
    """`count`: the actor's denied events in (occurred_at - denial_window, occurred_at]."""
    return _threshold(Rule.REPEATED_DENIALS, event, count, rules.denials, rules.denial_window)


def deactivated_activity(event: EventFacts, deactivated_at: datetime | None) -> Candidate | None:
    if not event.actor_id or deactivated_at is None or event.occurred_at <= deactivated_at:
        return None
    if event.action == DEACTIVATE_ACTION:
        return None
    bucket = _bucket(event.occurred_at, DEACTIVATED_BUCKET_SECONDS)
    return Candidate(
        Rule.DEACTIVATED_USER_ACTIVITY,
        event.actor_id,
        event.id,
        event.occurred_at,
        f"{Rule.DEACTIVATED_USER_ACTIVITY}:{event.actor_id}:{bucket}",
    )


def latest_per_actor(events: list[EventFacts]) -> dict[str, EventFacts]:
    latest: dict[str, EventFacts] = {}
    for event in events:
        current = latest.get(event.actor_id)
        if current is None or event.occurred_at >= current.occurred_at:
            latest[event.actor_id] = event
    return latest
