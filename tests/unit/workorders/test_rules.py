"""Pure rules: schedule sanity, the access window, decimal input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from doorward_kit.errors import DoorwardError, ErrorCode
from services.workorders.models import WorkOrder
from services.workorders.service import (
    WindowPolicy,
    access_window,
    check_schedule,
    in_window,
    parse_decimal,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = WindowPolicy(
    lead=timedelta(minutes=30),
    grace=timedelta(minutes=30),
    max_window=timedelta(hours=12),
    timezone="UTC",
)


def _order(status: str, start: datetime | None, end: datetime | None) -> WorkOrder:
    return WorkOrder(status=status, scheduled_start=start, scheduled_end=end)


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (NOW + timedelta(hours=2), NOW + timedelta(hours=1), "before"),
        (NOW + timedelta(hours=1), NOW + timedelta(hours=1), "before"),
        (NOW, NOW + timedelta(hours=12, minutes=1), "12 hours"),
        (NOW - timedelta(hours=3), NOW - timedelta(hours=1), "past"),
        (datetime(2026, 11, 24, 8), datetime(2026, 11, 24, 9), "zone offset"),
    ],
)
def test_insane_windows_are_refused_with_the_rule(
    start: datetime, end: datetime, words: str
) -> None:
    with pytest.raises(DoorwardError) as refused:
        check_schedule(start, end, POLICY, NOW)
    assert refused.value.code is ErrorCode.BAD_USER_INPUT
    assert words in refused.value.message


def test_sane_windows_pass() -> None:
    check_schedule(NOW - timedelta(hours=1), NOW + timedelta(hours=11), POLICY, NOW)
    check_schedule(None, None, POLICY, NOW)
    check_schedule(NOW + timedelta(hours=1), None, POLICY, NOW)


def test_access_window_edges() -> None:
    start, end = NOW + timedelta(minutes=30), NOW + timedelta(hours=2)
    order = _order("DISPATCHED", start, end)
    assert access_window(order, POLICY) == (NOW, end + timedelta(minutes=30))
    assert in_window(order, POLICY, NOW)  # exactly at start - lead
    assert not in_window(order, POLICY, NOW - timedelta(seconds=1))
    assert in_window(order, POLICY, end + timedelta(minutes=29))
    assert not in_window(order, POLICY, end + timedelta(minutes=30))
    for status in ("DRAFT", "SCHEDULED", "COMPLETED", "CANCELLED"):
        assert not in_window(_order(status, start, end), POLICY, NOW + timedelta(hours=1))
    assert in_window(_order("IN_PROGRESS", start, end), POLICY, NOW + timedelta(hours=1))
    assert not in_window(_order("DISPATCHED", None, None), POLICY, NOW)


def test_decimals() -> None:
    assert parse_decimal("q", " 1.5 ", places=3, maximum=Decimal(10)) == Decimal("1.5")
    for bad in ("abc", "-1", "11", "1.2345", "NaN", "Infinity"):
        with pytest.raises(DoorwardError):
            parse_decimal("q", bad, places=3, maximum=Decimal(10))
