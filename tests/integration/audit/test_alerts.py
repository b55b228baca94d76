"""Security alert rules over the stream, read back through securityAlerts and the trail."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from doorward_kit.audit_client import Outcome
from doorward_kit.auth import Role
from tests.integration.audit.harness import record, running_audit

pytestmark = pytest.mark.integration

ALERTS = """
query($first: Int, $after: String) {
  securityAlerts(first: $first, after: $after) {
    edges { cursor node { id rule actor { id } triggerEventId alertEventId occurredAt
                          details { key value } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
ALERT_EVENTS = """
{ auditEvents(action: "security.alert", first: 200) { edges { node {
    seq actor { id } targetType targetId details { key value } } } } }
"""


@pytest.fixture(scope="module")
async def audit(postgres):
    async with running_audit(
        postgres, audit_alert_reveals=3, audit_alert_denials=3, audit_alert_denial_window=600
    ) as harness:
        yield harness


async def _alerts(audit, org_id):
    body = await audit.graphql(ALERTS, audit.token(org_id=org_id), {"first": 200})
    return [e["node"] for e in body["data"]["securityAlerts"]["edges"]]


def _details(node):
    return {d["key"]: d["value"] for d in node["details"]}


async def test_every_rule_fires_once_and_lands_on_the_trail(audit):
    org = "org-alerts"
    # Alerts are deduplicated per clock-aligned bucket (an hour for reveals): the test's events
    # span five minutes from the start of this hour, so none of them crosses into the next
    # (from now, a run at 01:57 put the fourth reveal in a new bucket and a second alert).
    now = datetime.now(UTC).replace(minute=0, second=1, microsecond=0)
    revealer, prober, late, glass, leaver = (str(uuid.uuid4()) for _ in range(5))
    batch = []
    # 4 reveals in 20 minutes: over the threshold of 3 (one alert, not two).
    batch += [
        record(
            org, actor_id=revealer, action="secret.reveal", occurred_at=now + timedelta(minutes=i)
        )
        for i in range(4)
    ]
    # Denied attempts: 2 now, 1 more in a second batch.
    batch += [
        record(org, actor_id=prober, action="workorder.read", outcome=Outcome.DENIED)
        for _ in range(2)
    ]
    batch.append(
        record(
            org,
            actor_id=late,
            action="secret.access.denied",
            outcome=Outcome.DENIED,
            details={"reason": "outside_window"},
        )
    )
    batch.append(record(org, actor_id=glass, action="secret.break_glass"))
    await audit.append(batch)
    rules = sorted(a["rule"] for a in await _alerts(audit, org))
    assert rules == ["break_glass", "many_reveals", "outside_window"]

    await audit.append(
        [record(org, actor_id=prober, action="workorder.read", outcome=Outcome.DENIED)]
    )
    admin = str(uuid.uuid4())
    await audit.append(
        [
            record(
                org,
                actor_id=admin,
                action="user.deactivate",
                target_type="User",
                target_id=leaver,
                occurred_at=now,
            )
        ]
    )
    # The deactivated user still acts (e.g. a token that was in flight).
    await audit.append(
        [
            record(
                org,
                actor_id=leaver,
                action="workorder.read",
                occurred_at=now + timedelta(seconds=5),
            )
        ]
    )
    # Same rules again inside the same buckets: no duplicate alerts.
    await audit.append(
        [
            record(
                org,
                actor_id=revealer,
                action="secret.reveal",
                occurred_at=now + timedelta(minutes=5),
            )
        ]
    )
    alerts = await _alerts(audit, org)
    by_rule = {a["rule"]: a for a in alerts}
    assert sorted(by_rule) == [
        "break_glass",
        "deactivated_user_activity",
        "many_reveals",
        "outside_window",
        "repeated_denials",
    ]
    assert len(alerts) == 5
    assert by_rule["many_reveals"]["actor"] == {"id": revealer}
    assert _details(by_rule["many_reveals"])["count"] == "4"
    assert by_rule["repeated_denials"]["actor"] == {"id": prober}
    assert by_rule["deactivated_user_activity"]["actor"] == {"id": leaver}
    assert by_rule["break_glass"]["actor"] == {"id": glass}

    # Each alert is a security.alert event on the (still intact) chain.
    body = await audit.graphql(ALERT_EVENTS, audit.token(org_id=org))
    events = [e["node"] for e in body["data"]["auditEvents"]["edges"]]
    assert len(events) == 5
    assert {_details(e)["alert_id"] for e in events} == {a["id"] for a in alerts}
    assert all(e["actor"] is None and e["targetType"] == "User" for e in events)
    body = await audit.graphql("{ auditIntegrity { ok checkedEvents } }", audit.token(org_id=org))
    assert body["data"]["auditIntegrity"]["ok"] is True


async def test_alerts_page_and_are_for_auditors_only(audit):
    org = "org-alert-pages"
    await audit.append([record(org, action="secret.break_glass") for _ in range(5)])
    token = audit.token(org_id=org, roles=[Role.ADMIN])
    seen, after = [], None
    while True:
        body = await audit.graphql(ALERTS, token, {"first": 2, "after": after})
        conn = body["data"]["securityAlerts"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 5
    for role in (Role.DISPATCHER, Role.TECHNICIAN, Role.SUBCONTRACTOR):
        body = await audit.graphql(ALERTS, audit.token(org_id=org, roles=[role]), {})
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Another organisation sees none of them.
    assert await _alerts(audit, "org-elsewhere") == []
