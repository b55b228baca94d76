"""Retention policy and legal holds through the workorders subgraph, from both sides: only an
ADMIN of the organisation reads or changes them; bounds hold (audit events at least six months);
a hold's target must exist in the caller's organisation; a held customer cannot be erased until
the hold is released; every change is audited with ids only (reasons stay out of the trail)."""

from __future__ import annotations

import pytest
from doorward.audit.v1 import audit_pb2

from tests.integration.workorders.conftest import (
    Org,
    Running,
    error_code,
    eventually,
    make_customer,
    make_job,
    ok,
)

pytestmark = pytest.mark.integration

POLICY = """{ retentionPolicy { workOrderDays contactDataDays siteSecretDays grantDays
  auditEventDays traceDays } }"""
UPDATE = """mutation($i: RetentionPolicyInput!) { updateRetentionPolicy(input: $i) {
  workOrderDays contactDataDays auditEventDays traceDays } }"""
PLACE = """mutation($t: HoldTarget!, $id: ID!, $r: String!) {
  placeLegalHold(targetType: $t, targetId: $id, reason: $r) {
    id targetType targetId reason active placedAt placedBy { id } releasedAt } }"""
RELEASE = """mutation($id: ID!, $r: String!) { releaseLegalHold(id: $id, reason: $r) {
  id active releasedAt releaseReason releasedBy { id } } }"""
HOLDS = "{ legalHolds { id targetType targetId active } }"
ERASE = (
    'mutation($id: ID!) { eraseCustomer(customerId: $id, reason: "art. 17 request") { id erased } }'
)
CASE = "Litigation Smith v Doorward 2026-17"


async def test_policy_defaults_bounds_and_who(running: Running, org: Org) -> None:
    data = await ok(running, POLICY, {}, org.admin.token)
    assert data["retentionPolicy"] == {
        "workOrderDays": 2192,
        "contactDataDays": 730,
        "siteSecretDays": 730,
        "grantDays": 90,
        "auditEventDays": 2192,
        "traceDays": 30,
    }
    for person in (org.dispatcher, org.tech, org.sub, org.auditor):
        assert error_code(await running.gql(POLICY, {}, token=person.token)) == "FORBIDDEN"
        body = await running.gql(UPDATE, {"i": {"traceDays": 7}}, token=person.token)
        assert error_code(body) == "FORBIDDEN"
    for bad in ({"auditEventDays": 182}, {"workOrderDays": 100}, {"traceDays": 0}):
        body = await running.gql(UPDATE, {"i": bad}, token=org.admin.token)
        assert error_code(body) == "BAD_USER_INPUT", bad
    data = await ok(running, UPDATE, {"i": {"auditEventDays": 183}}, org.admin.token)
    assert data["updateRetentionPolicy"]["auditEventDays"] == 183
    assert data["updateRetentionPolicy"]["workOrderDays"] == 2192  # omitted: kept
    other = running.new_org()
    data = await ok(running, POLICY, {}, other.admin.token)
    assert data["retentionPolicy"]["auditEventDays"] == 2192  # per organisation
    await eventually(
        lambda: (
            [e.outcome for e in running.audit.of(org.id, "org.retention_policy.update")].count(
                audit_pb2.ALLOWED
            )
            == 1
        )
    )
    event = next(
        e
        for e in running.audit.of(org.id, "org.retention_policy.update")
        if e.outcome == audit_pb2.ALLOWED
    )
    assert event.details["fields"] == "auditEventDays"


async def test_holds_from_both_sides_and_erasure_waits(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    for person in (org.dispatcher, org.tech, org.auditor):
        body = await running.gql(
            PLACE, {"t": "CUSTOMER", "id": job.customer_id, "r": CASE}, token=person.token
        )
        assert error_code(body) == "FORBIDDEN", person
        assert error_code(await running.gql(HOLDS, {}, token=person.token)) == "FORBIDDEN"
    other = running.new_org()
    body = await running.gql(
        PLACE, {"t": "CUSTOMER", "id": job.customer_id, "r": CASE}, token=other.admin.token
    )
    assert error_code(body) == "NOT_FOUND"
    body = await running.gql(
        PLACE, {"t": "SITE", "id": job.work_order_id, "r": CASE}, token=org.admin.token
    )
    assert error_code(body) == "NOT_FOUND"  # a work order's id is not a site
    body = await running.gql(
        PLACE, {"t": "WORK_ORDER", "id": job.work_order_id, "r": " "}, token=org.admin.token
    )
    assert error_code(body) == "BAD_USER_INPUT"

    data = await ok(
        running, PLACE, {"t": "WORK_ORDER", "id": job.work_order_id, "r": CASE}, org.admin.token
    )
    hold = data["placeLegalHold"]
    assert hold["targetType"] == "WORK_ORDER" and hold["targetId"] == job.work_order_id
    assert hold["active"] is True and hold["releasedAt"] is None
    assert hold["placedBy"] == {"id": org.admin.id} and hold["reason"] == CASE
    data = await ok(running, HOLDS, {}, org.admin.token)
    assert {
        "id": hold["id"],
        "targetType": "WORK_ORDER",
        "targetId": job.work_order_id,
        "active": True,
    } in data["legalHolds"]
    assert not (await ok(running, HOLDS, {}, other.admin.token))["legalHolds"]

    # A hold on one of the customer's jobs keeps the customer's data: no erasure.
    body = await running.gql(ERASE, {"id": job.customer_id}, token=org.admin.token)
    assert error_code(body) == "CONFLICT"
    assert job.customer_id not in running.secrets.destroyed

    for person in (org.dispatcher, other.admin):
        body = await running.gql(RELEASE, {"id": hold["id"], "r": "Settled"}, token=person.token)
        assert error_code(body) in ("FORBIDDEN", "NOT_FOUND")
    data = await ok(running, RELEASE, {"id": hold["id"], "r": "Case settled"}, org.admin.token)
    assert data["releaseLegalHold"]["active"] is False
    assert data["releaseLegalHold"]["releasedBy"] == {"id": org.admin.id}
    body = await running.gql(
        RELEASE, {"id": hold["id"], "r": "Case settled"}, token=org.admin.token
    )
    assert error_code(body) == "CONFLICT"
    data = await ok(running, ERASE, {"id": job.customer_id}, org.admin.token)
    assert data["eraseCustomer"]["erased"] is True

    await eventually(lambda: len(running.audit.of(org.id, "legal_hold.release")) >= 1)
    placed = [
        e for e in running.audit.of(org.id, "legal_hold.place") if e.outcome == audit_pb2.ALLOWED
    ]
    assert len(placed) == 1 and placed[0].target_id == hold["id"]
    assert placed[0].work_order_id == job.work_order_id
    for event in running.audit.events:
        assert CASE not in str(event)
    await eventually(
        lambda: any(
            e.details.get("reason") == "legal_hold" and e.outcome == audit_pb2.DENIED
            for e in running.audit.of(org.id, "customer.erase")
        )
    )


async def test_customer_and_site_holds(running: Running, org: Org) -> None:
    customer_id, site_id = await make_customer(running, org)
    for target, target_id in (("CUSTOMER", customer_id), ("SITE", site_id)):
        data = await ok(running, PLACE, {"t": target, "id": target_id, "r": CASE}, org.admin.token)
        body = await running.gql(ERASE, {"id": customer_id}, token=org.admin.token)
        assert error_code(body) == "CONFLICT", target
        await ok(
            running, RELEASE, {"id": data["placeLegalHold"]["id"], "r": "Resolved"}, org.admin.token
        )
