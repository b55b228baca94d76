"""GDPR Art. 18 restriction of processing, from both sides: only an ADMIN restricts or lifts it;
while it holds, contact data is not decrypted (no data key is even fetched), no job is created,
assigned or dispatched for the customer; every change (and every refused one) is audited with
ids only, and lifting it restores the honest use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from doorward.audit.v1 import audit_pb2
from sqlalchemy import text

from tests.integration.workorders.conftest import (
    ASSIGN,
    CREATE_WO,
    DISPATCH,
    Org,
    Running,
    error_code,
    eventually,
    iso,
    make_customer,
    make_job,
    ok,
)

pytestmark = pytest.mark.integration

RESTRICT = """mutation($id: ID!, $r: String!) { restrictCustomer(customerId: $id, reason: $r) {
  id restricted name } }"""
UNRESTRICT = """mutation($id: ID!, $r: String!) { unrestrictCustomer(customerId: $id, reason: $r) {
  id restricted name } }"""
CUSTOMER = (
    "query($id: ID!) { customer(id: $id) { id restricted name phone email sites { address } } }"
)
JOB_CONTACT = """query($id: ID!) { workOrder(id: $id) { id site { address
  customer { id restricted name phone } } } }"""
NAME = "Philippa Restrictwell"
REASON = "Subject contests accuracy; ticket DPO-7"


def _new_order(site_id: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "input": {
            "siteId": site_id,
            "title": "Service visit",
            "scheduledStart": iso(now + timedelta(hours=1)),
            "scheduledEnd": iso(now + timedelta(hours=2)),
        }
    }


async def test_only_an_admin_restricts(running: Running, org: Org) -> None:
    customer_id, _ = await make_customer(running, org, name=NAME)
    for person in (org.dispatcher, org.tech, org.sub, org.auditor):
        body = await running.gql(RESTRICT, {"id": customer_id, "r": REASON}, token=person.token)
        assert error_code(body) in ("FORBIDDEN", "NOT_FOUND"), person
    other = running.new_org()
    body = await running.gql(RESTRICT, {"id": customer_id, "r": REASON}, token=other.admin.token)
    assert error_code(body) == "NOT_FOUND"
    body = await running.gql(RESTRICT, {"id": customer_id, "r": "  "}, token=org.admin.token)
    assert error_code(body) == "BAD_USER_INPUT"
    data = await ok(running, CUSTOMER, {"id": customer_id}, org.admin.token)
    assert data["customer"]["restricted"] is False and data["customer"]["name"] == NAME
    # The refusals are on the trail (DENIED), with no free text in them.
    await eventually(lambda: len(running.audit.of(org.id, "customer.restrict")) == 4)
    for event in running.audit.of(org.id, "customer.restrict"):
        assert event.outcome == audit_pb2.DENIED
        assert REASON not in str(event)


async def test_restricted_contact_is_not_read(running: Running, org: Org) -> None:
    job = await make_job(running, org, site=await make_customer(running, org, name=NAME))
    data = await ok(running, RESTRICT, {"id": job.customer_id, "r": REASON}, org.admin.token)
    assert data["restrictCustomer"] == {"id": job.customer_id, "restricted": True, "name": None}
    crypto = running.runtime.service.crypto
    crypto.cache.forget(job.customer_id)
    before = running.secrets.decrypt_calls
    for person in (org.admin, org.dispatcher, org.tech):
        data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, person.token)
        site = data["workOrder"]["site"]
        assert site["address"] is None
        assert site["customer"] == {
            "id": job.customer_id,
            "restricted": True,
            "name": None,
            "phone": None,
        }
    # Not decrypted: the customer's data key was never even unwrapped.
    assert running.secrets.decrypt_calls == before
    await eventually(
        lambda: any(
            e.outcome == audit_pb2.DENIED and e.details.get("reason") == "restricted"
            for e in running.audit.of(org.id, "customer.contact.read")
        )
    )
    # The reason is kept beside the customer (not in the trail); the trail has the change.
    async with running.runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT restricted, actor_id, reason FROM customer_restrictions "
                    "WHERE customer_id = :id"
                ),
                {"id": job.customer_id},
            )
        ).all()
    assert [tuple(r) for r in rows] == [(True, org.admin.id, REASON)]
    await eventually(
        lambda: (
            [e.outcome for e in running.audit.of(org.id, "customer.restrict")]
            == [audit_pb2.ALLOWED]
        )
    )
    event = running.audit.of(org.id, "customer.restrict")[0]
    assert event.target_id == job.customer_id and REASON not in str(event)

    # Lifted: the honest reads work again, and the change is audited.
    data = await ok(running, UNRESTRICT, {"id": job.customer_id, "r": "Resolved"}, org.admin.token)
    assert data["unrestrictCustomer"] == {"id": job.customer_id, "restricted": False, "name": NAME}
    data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.tech.token)
    assert data["workOrder"]["site"]["customer"]["name"] == NAME
    await eventually(lambda: len(running.audit.of(org.id, "customer.unrestrict")) == 1)
    body = await running.gql(
        UNRESTRICT, {"id": job.customer_id, "r": "again"}, token=org.admin.token
    )
    assert error_code(body) == "CONFLICT"


async def test_no_job_created_assigned_or_dispatched(running: Running, org: Org) -> None:
    customer_id, site_id = await make_customer(running, org, name=NAME)
    # Created and assigned before the restriction; dispatched after it would be new processing.
    data = await ok(running, CREATE_WO, _new_order(site_id), org.dispatcher.token)
    wo_id = data["createWorkOrder"]["id"]
    await ok(running, ASSIGN, {"id": wo_id, "a": org.tech.id}, org.dispatcher.token)
    await ok(running, RESTRICT, {"id": customer_id, "r": REASON}, org.admin.token)

    body = await running.gql(CREATE_WO, _new_order(site_id), token=org.dispatcher.token)
    assert error_code(body) == "CONFLICT"
    body = await running.gql(ASSIGN, {"id": wo_id, "a": org.tech2.id}, token=org.dispatcher.token)
    assert error_code(body) == "CONFLICT"
    body = await running.gql(DISPATCH, {"id": wo_id}, token=org.dispatcher.token)
    assert error_code(body) == "CONFLICT"
    await eventually(
        lambda: any(
            e.details.get("reason") == "customer_restricted"
            for e in running.audit.of(org.id, "workorder.create")
        )
    )
    # Another customer's jobs are untouched by it.
    _, other_site = await make_customer(running, org)
    await ok(running, CREATE_WO, _new_order(other_site), org.dispatcher.token)

    await ok(running, UNRESTRICT, {"id": customer_id, "r": "Resolved"}, org.admin.token)
    await ok(running, CREATE_WO, _new_order(site_id), org.dispatcher.token)
    await ok(running, ASSIGN, {"id": wo_id, "a": org.tech2.id}, org.dispatcher.token)
    await ok(running, DISPATCH, {"id": wo_id}, org.dispatcher.token)
