"""A trail's events are built field by field (AuditEvent.from_trail) for speed: each is the same
object `from_row`, through the dataclass' own __init__, builds from the same row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.audit.api.graphql import AuditEvent, AuditOutcome
from services.audit.repository import TrailEvent

pytestmark = pytest.mark.unit


def _row(outcome: str, optional: str) -> TrailEvent:
    return TrailEvent(
        seq=7,
        id="e7",
        occurred_at=datetime(2026, 11, 30, tzinfo=UTC),
        actor_id="u1",
        action="customer.contact.read",
        outcome=outcome,
        work_order_id="w1",
        secret_ref_id=optional,
        target_type=optional,
        target_id=optional,
        trace_id=optional,
        source_ip=optional,
        service=optional,
        details={"reason": "x", "n": 1},
        prev_hash="0" * 64,
        hash="1" * 64,
    )


@pytest.mark.parametrize("optional", ["", "present"])
@pytest.mark.parametrize("outcome", [o.value for o in AuditOutcome])
def test_from_trail_is_from_row(outcome: str, optional: str) -> None:
    row = _row(outcome, optional)
    fast, slow = AuditEvent.from_trail(row), AuditEvent.from_row(row)
    assert type(fast) is AuditEvent
    assert vars(fast) == vars(slow)
    assert list(vars(fast)) == list(vars(slow))  # every field, none more
    assert fast.details() == slow.details()


def test_an_unknown_outcome_fails_the_same_way() -> None:
    with pytest.raises(KeyError):
        AuditEvent.from_row(_row("MAYBE", ""))
    with pytest.raises(KeyError):
        AuditEvent.from_trail(_row("MAYBE", ""))
