"""What one AppendEvents costs in the database: a batch without alerts is the head lock, one read
and one write (the events and the new head in one statement), whatever its size; the chain it
writes is the same as before (it verifies, every event in its place), a retried batch still
stores nothing twice, and the rules still see the batch's own events (a deactivation and the
deactivated user's next action in one batch raise the alert)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from doorward_kit.audit_client import Outcome
from tests.integration.audit.harness import record, running_audit

pytestmark = pytest.mark.integration

INTEGRITY = "{ auditIntegrity { ok checkedEvents headSeq } }"


@pytest.fixture(scope="module")
async def audit(postgres):
    async with running_audit(postgres) as harness:
        yield harness


class Statements:
    def __init__(self, audit) -> None:
        self.engine = audit.runtime.db.engine.sync_engine
        self.seen: list[str] = []

    def _count(self, conn, cursor, statement, *args) -> None:
        self.seen.append(" ".join(statement.split())[:60])

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


@pytest.mark.parametrize("size", [1, 5, 40])
async def test_a_batch_is_three_statements_whatever_its_size(audit, size) -> None:
    org = f"org-cost-{size}"
    await audit.append([record(org, work_order_id="w-1")])  # the org's head exists
    batch = [record(org, work_order_id=f"w-{i}", details={"field": "status"}) for i in range(size)]
    with Statements(audit) as statements:
        await audit.append(batch)
    assert len(statements.seen) == 3, statements.seen
    lock, read, write = statements.seen
    assert lock.startswith("SELECT seq, hash FROM audit_heads")
    assert read.startswith("SELECT 'stored'")
    assert write.startswith("WITH inserted AS")
    body = await audit.graphql(INTEGRITY, audit.token(org_id=org))
    assert body["data"]["auditIntegrity"] == {
        "ok": True,
        "checkedEvents": size + 1,
        "headSeq": size + 1,
    }
    # The events are stored as sent (details as JSON), in order.
    rows = await audit.graphql(
        "{ auditEvents(first: 100) { edges { node { seq workOrder { id } details { key value } } } } }",
        audit.token(org_id=org),
    )
    nodes = [e["node"] for e in rows["data"]["auditEvents"]["edges"]][::-1]
    assert [n["seq"] for n in nodes] == list(range(1, size + 2))
    assert [n["workOrder"]["id"] for n in nodes[1:]] == [f"w-{i}" for i in range(size)]
    assert all(n["details"] == [{"key": "field", "value": "status"}] for n in nodes[1:])


async def test_a_retried_batch_stores_only_what_is_new(audit) -> None:
    org = "org-cost-retry"
    first = [record(org) for _ in range(3)]
    await audit.append(first)
    with Statements(audit) as statements:
        await audit.append(first)  # all stored already: nothing is written
    assert len(statements.seen) == 2, statements.seen
    await audit.append([*first, record(org)])
    body = await audit.graphql(INTEGRITY, audit.token(org_id=org))
    assert body["data"]["auditIntegrity"] == {"ok": True, "checkedEvents": 4, "headSeq": 4}


async def test_a_new_organisation_gets_its_head_in_the_same_transaction(audit) -> None:
    org = f"org-{uuid.uuid4()}"
    with Statements(audit) as statements:
        await audit.append([record(org)])
    # No head yet: the lock finds none, creates it, locks it; then the read and the write.
    assert len(statements.seen) == 5, statements.seen
    body = await audit.graphql(INTEGRITY, audit.token(org_id=org))
    assert body["data"]["auditIntegrity"]["ok"] is True


async def test_a_deactivation_counts_for_the_rest_of_its_own_batch(audit) -> None:
    org = "org-cost-leaver"
    leaver, admin = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    await audit.append(
        [
            record(
                org,
                actor_id=admin,
                action="user.deactivate",
                target_type="User",
                target_id=leaver,
                occurred_at=now,
            ),
            record(
                org,
                actor_id=leaver,
                action="workorder.read",
                occurred_at=now + timedelta(seconds=1),
            ),
            # Before the deactivation: no alert for this one.
            record(
                org, actor_id=leaver, action="workorder.read", occurred_at=now - timedelta(hours=2)
            ),
        ]
    )
    body = await audit.graphql(
        "{ securityAlerts(first: 10) { edges { node { rule actor { id } } } } }",
        audit.token(org_id=org),
    )
    alerts = [e["node"] for e in body["data"]["securityAlerts"]["edges"]]
    assert alerts == [{"rule": "deactivated_user_activity", "actor": {"id": leaver}}]
    # And an honest user's batch raises nothing.
    await audit.append(
        [record(org, actor_id=admin, action="workorder.read", outcome=Outcome.ALLOWED)]
    )
    body = await audit.graphql(
        "{ securityAlerts(first: 10) { edges { node { rule } } } }", audit.token(org_id=org)
    )
    assert len(body["data"]["securityAlerts"]["edges"]) == 1
