from datetime import UTC, datetime, timedelta

import pytest

from services.audit import alerts
from services.audit.alerts import AlertRules, EventFacts, Rule

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def fact(action="workorder.read", outcome="ALLOWED", actor="u-1", at=T0, **details):
    return EventFacts(
        id=f"e-{action}-{at.timestamp()}",
        actor_id=actor,
        action=action,
        outcome=outcome,
        occurred_at=at,
        details=details,
    )


def test_outside_window_and_break_glass_fire_per_event():
    found = alerts.per_event(fact("secret.access.denied", "DENIED", reason="outside_window"))
    assert [c.rule for c in found] == [Rule.OUTSIDE_WINDOW]
    assert alerts.per_event(fact("secret.access.denied", "DENIED", reason="not_assigned")) == []
    assert [c.rule for c in alerts.per_event(fact("secret.break_glass"))] == [Rule.BREAK_GLASS]
    assert [c.rule for c in alerts.per_event(fact("secret.break_glass.reveal"))] == [
        Rule.BREAK_GLASS
    ]
    assert alerts.per_event(fact("secret.reveal")) == []


def test_thresholds_and_buckets():
    rules = AlertRules(reveals=3, reveal_window=3600, denials=2, denial_window=600)
    event = fact("secret.reveal")
    assert alerts.many_reveals(event, 2, rules) is None
    hit = alerts.many_reveals(event, 3, rules)
    assert hit is not None and hit.details["count"] == "3"
    later = alerts.many_reveals(fact("secret.reveal", at=T0 + timedelta(minutes=10)), 4, rules)
    assert later is not None and later.dedup_key == hit.dedup_key  # same hour: one alert
    next_hour = alerts.many_reveals(fact("secret.reveal", at=T0 + timedelta(hours=1)), 4, rules)
    assert next_hour is not None and next_hour.dedup_key != hit.dedup_key
    assert alerts.repeated_denials(fact(outcome="DENIED"), 2, rules) is not None


def test_what_counts():
    assert alerts.counts_as_reveal(fact("secret.reveal"))
    assert not alerts.counts_as_reveal(fact("secret.reveal", outcome="DENIED"))
    assert not alerts.counts_as_reveal(fact("secret.reveal", actor=""))
    assert alerts.counts_as_denial(fact(outcome="DENIED"))
    assert not alerts.watched(fact(alerts.ALERT_ACTION))


def test_deactivated_user_activity_only_after_the_deactivation():
    event = fact(at=T0 + timedelta(seconds=1))
    assert alerts.deactivated_activity(event, None) is None
    assert alerts.deactivated_activity(event, T0 + timedelta(seconds=2)) is None
    found = alerts.deactivated_activity(event, T0)
    assert found is not None and found.rule is Rule.DEACTIVATED_USER_ACTIVITY
    assert alerts.deactivated_activity(fact("user.deactivate", at=T0 + timedelta(1)), T0) is None


def test_latest_per_actor():
    a = fact(actor="a", at=T0)
    b = fact(actor="a", at=T0 + timedelta(seconds=5))
    c = fact(actor="c", at=T0)
    assert alerts.latest_per_actor([b, a, c]) == {"a": b, "c": c}
