"""A trail's events are built field by field straight from the trail rows (AuditEvent.from_trail)
for speed: each is the same object `from_row`, through the dataclass' own __init__, builds from
the same row read as a TrailEvent (repository.trail_event)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.audit.api.graphql import AuditEvent, AuditOutcome
from services.audit.repository import TrailEvent, trail_event

pytestmark = pytest.mark.unit


def _row(outcome: str, optional: str) -> tuple[object, ...]:
    """A trail row as the query answers it: TrailEvent's columns in order, details as text;
    every value its own, so a column read from the wrong position shows."""
    event = TrailEvent(
        seq=7,
        id="e7",
        occurred_at=datetime(2026, 11, 30, tzinfo=UTC),
        actor_id="u1",
        action="customer.contact.read",
        outcome=outcome,
        work_order_id="w1",
        secret_ref_id=optional and "s1",
        target_type=optional and "WorkOrder",
        target_id=optional and "t1",
        trace_id=optional and "tr1",
        source_ip=optional and "198.51.100.7",
        service=optional and "workorders",
        details={},
        prev_hash="0" * 64,
        hash="1" * 64,
    )
    return (*event[:13], json.dumps({"reason": "x", "n": 1}), *event[14:])


@pytest.mark.parametrize("optional", ["", "present"])
@pytest.mark.parametrize("outcome", [o.value for o in AuditOutcome])
def test_from_trail_is_from_row(outcome: str, optional: str) -> None:
    row = _row(outcome, optional)
    fast, slow = AuditEvent.from_trail(row), AuditEvent.from_row(trail_event(row))
    assert type(fast) is AuditEvent
    assert vars(fast) == vars(slow)
    assert list(vars(fast)) == list(vars(slow))  # every field, none more
    assert fast.details() == slow.details()


def test_an_unknown_outcome_fails_the_same_way() -> None:
    with pytest.raises(KeyError):
        AuditEvent.from_row(trail_event(_row("MAYBE", "")))
    with pytest.raises(KeyError):
        AuditEvent.from_trail(_row("MAYBE", ""))
