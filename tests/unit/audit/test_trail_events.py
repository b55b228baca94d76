"""A trail's events are built field by field straight from the trail rows (AuditEvent.from_trail)
for speed: each is the same object `from_row`, through the dataclass' own __init__, builds from
the same row read as a TrailEvent (repository.trail_event). A trail read of fewer columns (only
those the selected fields read: trail_columns, trail_maker) gives events whose every attribute
is the full one's, and every attribute its fields read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.audit.api.graphql import (
    AuditEvent,
    AuditOutcome,
    build_schema,
    trail_columns,
    trail_maker,
)
from services.audit.repository import TRAIL_COLUMNS, TrailEvent, trail_event, trail_sql

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


# ---- a trail of fewer columns (the board reads 4 of 16) ------------------------------------

# Every field of the GraphQL AuditEvent and the attributes it reads when resolved.
_READS: dict[str, tuple[str, ...]] = {
    "__typename": (),
    "id": ("id",),
    "seq": ("seq",),
    "occurredAt": ("occurred_at",),
    "actor": ("actor_id",),
    "action": ("action",),
    "outcome": ("outcome",),
    "workOrder": ("work_order_id",),
    "secretRefId": ("secret_ref_id",),
    "targetType": ("target_type",),
    "targetId": ("target_id",),
    "traceId": ("trace_id",),
    "trace": ("trace_id",),
    "sourceIp": ("source_ip",),
    "service": ("service",),
    "hash": ("hash",),
    "prevHash": ("prev_hash",),
    "details": ("raw_details",),
}


def test_every_event_field_has_its_columns_and_an_unknown_one_reads_them_all() -> None:
    schema = build_schema()
    fields = set(schema._schema.type_map["AuditEvent"].fields)  # type: ignore[union-attr]
    assert fields | {"__typename"} == set(_READS)
    assert trail_columns(["action", "outcome"]) == ("seq", "action", "outcome", "work_order_id")
    assert trail_columns([]) == ("seq", "work_order_id")
    assert trail_columns(["action", "somethingNew"]) == TRAIL_COLUMNS


def _narrow(row: tuple[object, ...], columns: tuple[str, ...]) -> tuple[object, ...]:
    return tuple(row[TRAIL_COLUMNS.index(c)] for c in columns)


@pytest.mark.parametrize("optional", ["", "present"])
@pytest.mark.parametrize(
    "fields",
    [[name] for name in _READS]
    + [["action", "outcome"], ["id", "details", "trace", "hash"], sorted(_READS)],
)
def test_an_event_of_fewer_columns_has_what_its_fields_read_as_the_full_one(
    fields: list[str], optional: str
) -> None:
    row = _row("DENIED", optional)
    columns = trail_columns(fields)
    full = vars(AuditEvent.from_trail(row))
    narrow = trail_maker(columns)(_narrow(row, columns))
    assert type(narrow) is AuditEvent
    wanted = {"seq", "work_order_id"} | {a for f in fields for a in _READS[f]}
    assert set(vars(narrow)) == {"raw_details" if c == "details" else c for c in columns}
    assert wanted <= set(vars(narrow))
    for name, value in vars(narrow).items():
        assert value == full[name], name
    if "details" in fields:
        assert narrow.details() == AuditEvent.from_trail(row).details()


def test_trail_statements_read_the_columns_asked_in_order_and_nothing_else() -> None:
    sql = trail_sql(("seq", "action", "outcome", "work_order_id"))
    assert "SELECT seq, action, outcome, work_order_id FROM audit_events" in sql
    assert "org_id = $1" in sql  # the tenant filter, whatever the columns
    assert trail_sql(TRAIL_COLUMNS) == trail_sql()
    for wrong in [("action", "work_order_id"), ("work_order_id", "seq"), ("seq", "nope")]:
        with pytest.raises(ValueError):
            trail_sql(wrong)
