"""Customer contact data: encrypted at rest (checked in PostgreSQL itself), each read audited,
reduced for subcontractors and hidden outside their window; GDPR export and erasure."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.workorders.conftest import (
    COMPLETE,
    CREATE_CUSTOMER,
    START,
    Org,
    Running,
    error_code,
    eventually,
    make_customer,
    make_job,
    ok,
)

pytestmark = pytest.mark.integration

JOB_CONTACT = """query($id: ID!) { workOrder(id: $id) { id site { id address
  customer { id name phone email erased } } } }"""
CUSTOMER = """query($id: ID!) { customer(id: $id) { id name phone email erased region { id }
  sites { id address secrets { id kind label } } } }"""
CUSTOMERS = "query { customers(first: 200) { edges { node { id } } pageInfo { hasNextPage } } }"
EXPORT = "mutation($id: ID!) { exportCustomerData(customerId: $id) }"
ERASE = "mutation($id: ID!, $r: String!) { eraseCustomer(customerId: $id, reason: $r) { id erased name phone email } }"

NAME = "Zebulon Quarterfield"
PHONE = "+44 7700 900123"
EMAIL = "zebulon.quarterfield@example.org"
ADDRESS = "77 Marmalade Crescent, Puddleby"


async def _contact_job(running: Running, org: Org, **kw: Any) -> Any:
    site = await make_customer(running, org, name=NAME, phone=PHONE, email=EMAIL, address=ADDRESS)
    return await make_job(running, org, site=site, **kw)


async def test_no_contact_field_in_clear_text_in_postgres(running: Running, org: Org) -> None:
    job = await _contact_job(running, org)
    data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.admin.token)
    assert data["workOrder"]["site"]["customer"]["name"] == NAME
    db = running.runtime.db
    async with db.engine.connect() as conn:
        tables = (
            (
                await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            )
            .scalars()
            .all()
        )
        dump: list[str] = []
        for table in tables:
            rows = (await conn.execute(text(f'SELECT t::text FROM "{table}" t'))).scalars().all()
            dump.extend(rows)
    blob = "\n".join(dump)
    assert "customers" in tables and "sites" in tables
    for needle in (NAME, PHONE, EMAIL, ADDRESS, "Zebulon", "Marmalade", "7700 900123"):
        assert needle not in blob
        # bytea columns print as hex: look for the hex form too.
        assert needle.encode().hex() not in blob


async def test_contact_reads_by_role(running: Running, org: Org) -> None:
    job = await _contact_job(running, org)
    for person in (org.admin, org.dispatcher, org.tech):
        data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, person.token)
        site = data["workOrder"]["site"]
        assert site["address"] == ADDRESS
        assert site["customer"] == {
            "id": job.customer_id,
            "name": NAME,
            "phone": PHONE,
            "email": EMAIL,
            "erased": False,
        }
    await eventually(
        lambda: (
            {
                e.actor_id
                for e in running.audit.of(org.id, "customer.contact.read")
                if e.target_id == job.customer_id and e.outcome == 1
            }
            >= {org.admin.id, org.dispatcher.id, org.tech.id}
        )
    )
    # No contact value ever reaches the audit trail.
    for event in running.audit.events:
        serialized = event.SerializeToString()
        for needle in (NAME, PHONE, EMAIL, ADDRESS):
            assert needle.encode() not in serialized
    # Another technician, the other region's dispatcher and an auditor reach nothing.
    for person in (org.tech2, org.dispatcher_r2, org.auditor):
        body = await running.gql(JOB_CONTACT, {"id": job.work_order_id}, token=person.token)
        assert error_code(body) == "NOT_FOUND"
        body = await running.gql(CUSTOMER, {"id": job.customer_id}, token=person.token)
        assert error_code(body) == "NOT_FOUND"


async def test_subcontractor_sees_reduced_contact_only_inside_window(
    running: Running, org: Org
) -> None:
    inside = await _contact_job(running, org, assignee=org.sub)
    data = await ok(running, JOB_CONTACT, {"id": inside.work_order_id}, org.sub.token)
    site = data["workOrder"]["site"]
    assert site["address"] == ADDRESS
    assert site["customer"]["name"] == NAME
    assert site["customer"]["phone"] is None and site["customer"]["email"] is None

    later = await _contact_job(running, org, assignee=org.sub, start_in=timedelta(hours=5))
    data = await ok(running, JOB_CONTACT, {"id": later.work_order_id}, org.sub.token)
    site = data["workOrder"]["site"]
    assert site["address"] is None
    assert site["customer"]["name"] is None
    assert site["customer"]["phone"] is None and site["customer"]["email"] is None
    await eventually(
        lambda: any(
            e.target_id == later.customer_id and e.outcome == 2
            for e in running.audit.of(org.id, "customer.contact.read")
        )
    )
    # Not dispatched yet: no window either.
    draft = await _contact_job(running, org, assignee=org.sub, dispatch=False)
    data = await ok(running, JOB_CONTACT, {"id": draft.work_order_id}, org.sub.token)
    assert data["workOrder"]["site"]["customer"]["name"] is None


async def test_customer_queries_and_creation_rights(running: Running, org: Org) -> None:
    customer_id, site_id = await make_customer(running, org)
    data = await ok(running, CUSTOMER, {"id": customer_id}, org.dispatcher.token)
    assert data["customer"]["sites"][0]["id"] == site_id
    data = await ok(running, CUSTOMERS, {}, org.dispatcher.token)
    assert customer_id in {e["node"]["id"] for e in data["customers"]["edges"]}
    data = await ok(running, CUSTOMERS, {}, org.dispatcher_r2.token)
    assert customer_id not in {e["node"]["id"] for e in data["customers"]["edges"]}
    data = await ok(running, CUSTOMERS, {}, org.tech.token)
    assert data["customers"]["edges"] == []
    new = {"name": "N", "phone": "", "email": "", "regionId": org.r1}
    for person in (org.tech, org.sub, org.auditor, org.dispatcher_r2):
        body = await running.gql(CREATE_CUSTOMER, {"input": new}, token=person.token)
        assert error_code(body) == "FORBIDDEN", person
    await ok(running, CREATE_CUSTOMER, {"input": new}, org.admin.token)
    body = await running.gql(
        CREATE_CUSTOMER, {"input": dict(new, email="not-an-email")}, token=org.admin.token
    )
    assert error_code(body) == "BAD_USER_INPUT"


async def test_export_and_erase(running: Running, org: Org) -> None:
    job = await _contact_job(running, org)
    for person in (org.dispatcher, org.tech, org.auditor):
        body = await running.gql(EXPORT, {"id": job.customer_id}, token=person.token)
        assert error_code(body) in ("FORBIDDEN", "NOT_FOUND"), person
        body = await running.gql(ERASE, {"id": job.customer_id, "r": "asked"}, token=person.token)
        assert error_code(body) in ("FORBIDDEN", "NOT_FOUND"), person
    data = await ok(running, EXPORT, {"id": job.customer_id}, org.admin.token)
    document = json.loads(data["exportCustomerData"])
    assert document["customer"]["name"] == NAME and document["customer"]["email"] == EMAIL
    assert document["sites"][0]["address"] == ADDRESS
    assert document["sites"][0]["secretRefs"][0]["id"] == job.secret_ref_id
    assert document["workOrders"][0]["id"] == job.work_order_id
    await eventually(
        lambda: [int(e.outcome) for e in running.audit.of(org.id, "customer.export")].count(1) == 1
    )
    # The refused attempts are on the trail too.
    await eventually(lambda: len(running.audit.of(org.id, "customer.export")) == 4)

    # A "backup" of the row, taken before the erasure.
    async with running.runtime.db.engine.connect() as conn:
        backup = (
            await conn.execute(
                text("SELECT wrapped_key, contact FROM customers WHERE id = :id"),
                {"id": job.customer_id},
            )
        ).one()
    body = await running.gql(ERASE, {"id": job.customer_id, "r": " "}, token=org.admin.token)
    assert error_code(body) == "BAD_USER_INPUT"
    data = await ok(
        running, ERASE, {"id": job.customer_id, "r": "GDPR art. 17 request"}, org.admin.token
    )
    assert data["eraseCustomer"] == {
        "id": job.customer_id,
        "erased": True,
        "name": None,
        "phone": None,
        "email": None,
    }
    assert job.customer_id in running.secrets.destroyed
    assert job.site_id in running.secrets.deleted_sites
    data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.admin.token)
    assert data["workOrder"]["site"]["address"] is None
    assert data["workOrder"]["site"]["customer"]["erased"] is True
    # The backup is useless now: its wrapped key cannot be unwrapped anywhere.
    crypto = running.runtime.service.crypto
    crypto.cache.forget(job.customer_id)
    with pytest.raises(Exception) as raised:
        await crypto.key_for(org.id, job.customer_id, bytes(backup.wrapped_key))
    assert NAME not in str(raised.value)
    body = await running.gql(
        ERASE, {"id": job.customer_id, "r": "twice over"}, token=org.admin.token
    )
    assert error_code(body) == "CONFLICT"
    await eventually(
        lambda: [int(e.outcome) for e in running.audit.of(org.id, "customer.erase")].count(1) == 1
    )


async def test_data_keys_are_cached_briefly(running: Running, org: Org) -> None:
    job = await _contact_job(running, org)
    crypto = running.runtime.service.crypto
    crypto.cache.forget(job.customer_id)
    before = running.secrets.decrypt_calls
    for _ in range(3):
        await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.admin.token)
    assert running.secrets.decrypt_calls - before == 1


async def test_technician_contact_ends_with_the_job(running: Running, org: Org) -> None:
    job = await _contact_job(running, org)
    data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.tech.token)
    assert data["workOrder"]["site"]["customer"]["phone"] == PHONE
    await ok(running, START, {"id": job.work_order_id}, org.tech.token)
    await ok(running, COMPLETE, {"id": job.work_order_id}, org.tech.token)
    # The job stays in their history; the customer's contact data does not.
    data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.tech.token)
    customer = data["workOrder"]["site"]["customer"]
    assert customer["id"] == job.customer_id
    assert customer["name"] is None and customer["phone"] is None
    assert data["workOrder"]["site"]["address"] is None
    # Planners still see it.
    data = await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.dispatcher.token)
    assert data["workOrder"]["site"]["customer"]["phone"] == PHONE


async def test_no_contact_value_in_logs_or_errors(running: Running, org: Org) -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage() + repr(getattr(record, "fields", "")))
            if record.exc_info:
                records.append(repr(record.exc_info[1]))

    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        job = await _contact_job(running, org)
        await ok(running, JOB_CONTACT, {"id": job.work_order_id}, org.admin.token)
        # Refused and invalid requests written with the values inline in the operation text.
        inline = (
            f'mutation {{ createCustomer(input: {{name: "{NAME}", phone: "{PHONE}", '
            f'email: "{EMAIL}", regionId: "{org.r1}"}}) {{ id }} }}'
        )
        refused = await running.gql(inline, token=org.tech.token)
        assert error_code(refused) == "FORBIDDEN"
        invalid = inline.replace(EMAIL, "zebulon-at-nowhere")
        bad = await running.gql(invalid, token=org.admin.token)
        assert error_code(bad) == "BAD_USER_INPUT"
        for body in (refused, bad):
            for needle in (NAME, PHONE, EMAIL, "zebulon-at-nowhere"):
                assert needle not in json.dumps(body)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    text_seen = "\n".join(records)
    assert records
    for needle in (NAME, PHONE, EMAIL, ADDRESS, "zebulon-at-nowhere"):
        assert needle not in text_seen
