"""The board's trail read (issue 11): a raw statement whose events' details are parsed only
when shown. Every field of a trail's events, details included, is what the event list (the ORM
read) shows for the same events; another organisation's events are not in it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from doorward_kit.auth import Role
from services.audit.repository import StoredDetails
from tests.integration.audit.harness import record, running_audit

pytestmark = pytest.mark.integration

FIELDS = """id seq action outcome actor { id } workOrder { id } secretRefId targetType targetId
  traceId sourceIp hash prevHash occurredAt details { key value }"""
TRAILS = (
    "query($reps: [_Any!]!) { _entities(representations: $reps) { ... on WorkOrder { id"
    " auditTrail { " + FIELDS + " } } } }"
)
EVENTS = (
    "query($w: ID) { auditEvents(first: 100, workOrderId: $w) { edges { node { "
    + FIELDS
    + " } } } }"
)


async def test_a_trail_shows_each_event_as_the_event_list_does(postgres) -> None:
    orders = [str(uuid.uuid4()) for _ in range(3)]
    base = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    details = [
        {},
        {"status": "DISPATCHED", "previous_status": "SCHEDULED"},
        {"reason": 'Tür "vorne" ✓', "mode": "a-b"},
    ]
    async with running_audit(postgres) as audit:
        await audit.append(
            [
                record(
                    work_order_id=w,
                    action=f"step.n{k}",
                    occurred_at=base + timedelta(minutes=k),
                    details=details[k % 3],
                    trace_id=f"{k:032x}",
                )
                for w in orders
                for k in range(4)
            ]
            + [record(org_id="org-2", work_order_id=orders[0], details={"reason": "theirs"})]
        )
        token = audit.token(roles=[Role.ADMIN])
        body = await audit.graphql(
            TRAILS, token, {"reps": [{"__typename": "WorkOrder", "id": w} for w in orders]}
        )
        assert "errors" not in body, body
        for work_order, entity in zip(orders, body["data"]["_entities"], strict=True):
            listed = await audit.graphql(EVENTS, token, {"w": work_order})
            assert "errors" not in listed, listed
            oldest_first = [e["node"] for e in listed["data"]["auditEvents"]["edges"]][::-1]
            assert entity["auditTrail"] == oldest_first
            assert [e["details"] for e in entity["auditTrail"]] == [
                [{"key": k, "value": v} for k, v in sorted(details[i % 3].items())]
                for i in range(4)
            ]


def test_stored_details_parse_at_first_use_and_read_like_the_dict() -> None:
    broken = StoredDetails("{not json")  # never shown: never parsed
    assert isinstance(broken, StoredDetails)
    stored = StoredDetails('{"b": "2", "a": "1"}')
    assert stored == {"a": "1", "b": "2"} and stored == {"a": "1", "b": "2"}
    assert sorted(stored.items()) == [("a", "1"), ("b", "2")] and len(stored) == 2
    assert stored["a"] == "1" and dict(stored) == {"a": "1", "b": "2"}
    with pytest.raises(ValueError):
        len(broken)
