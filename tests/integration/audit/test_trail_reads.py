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


# (the selection below auditTrail, the fields it shows) for the test below: every field alone,
# aliases, a fragment, __typename.
_NESTED = {
    "actor": "actor { id }",
    "workOrder": "workOrder { id }",
    "details": "details { key value }",
}
_ALONE = [n for n in FIELDS.split() if n not in ("{", "}", "id", "key", "value")] + ["id"]
SHAPES = [(_NESTED.get(name, name), [name]) for name in _ALONE] + [
    ("a: action b: outcome", ["action", "outcome"]),
    ("action outcome", ["action", "outcome"]),  # the board's
    ("...F", ["hash", "details"]),
    ("seq __typename", ["seq"]),
]
_ALIASES = {"a": "action", "b": "outcome"}


async def test_a_trail_of_a_few_fields_reads_their_columns_and_shows_what_all_would(
    postgres,
) -> None:
    """The trail reads only the columns of the event fields the operation selects (the board:
    `action outcome`, 4 of 16 columns); each field shows what the read of every column shows,
    selected alone or with others, under an alias or through a fragment."""
    from sqlalchemy import event

    orders = [str(uuid.uuid4()) for _ in range(2)]
    async with running_audit(postgres) as audit:
        await audit.append(
            [
                record(
                    work_order_id=w,
                    action=f"step.n{k}",
                    details={"reason": f"r{k}"} if k % 2 else {},
                    trace_id=f"{k + 1:032x}" if k % 2 else "",
                )
                for w in orders
                for k in range(3)
            ]
            + [record(org_id="org-2", work_order_id=orders[0], details={"reason": "theirs"})]
        )
        token = audit.token(roles=[Role.ADMIN])
        reps = {"reps": [{"__typename": "WorkOrder", "id": w} for w in orders]}
        full = await audit.graphql(TRAILS, token, reps)
        assert "errors" not in full, full
        every = [entity["auditTrail"] for entity in full["data"]["_entities"]]
        assert [len(t) for t in every] == [3, 3]

        statements: list[str] = []

        def seen(conn, cursor, statement, *args) -> None:
            if "audit_events" in statement:
                statements.append(statement)

        engine = audit.runtime.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            for selection, names in SHAPES:
                statements.clear()
                fragment = " fragment F on AuditEvent { hash details { key value } }"
                body = await audit.graphql(
                    "query($reps: [_Any!]!) { _entities(representations: $reps) {"
                    " ... on WorkOrder { auditTrail { "
                    + selection
                    + " } } } }"
                    + (fragment if "...F" in selection else ""),
                    token,
                    reps,
                )
                assert "errors" not in body, (selection, body)
                trails = [entity["auditTrail"] for entity in body["data"]["_entities"]]
                shown = [
                    [{_ALIASES.get(k, k): v for k, v in e.items() if k != "__typename"} for e in t]
                    for t in trails
                ]
                assert shown == [[{n: e[n] for n in names} for e in t] for t in every], selection
                assert len(statements) == 1, statements
                if selection == "action outcome":
                    assert "SELECT seq, action, outcome, work_order_id FROM" in statements[0]
        finally:
            event.remove(engine, "before_cursor_execute", seen)
