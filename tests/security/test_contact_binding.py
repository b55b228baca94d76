"""Issue 10, finding 7 (contact ciphertexts): a customer's contact fields and each site's
address were sealed with the customer id as the only associated data, so a database writer could
move a ciphertext to another field or another site of the same customer and the service would
show it there (a customer's phone and email in a site address a subcontractor may read, the
wrong street for a technician).

Against the real workorders service and its real PostgreSQL (the other services faked over
gRPC): the honest read works; a swapped or moved ciphertext makes the read fail with UNAVAILABLE,
shows nothing of the other field, and is audited (ERROR, reason integrity); an old v1 ciphertext
written back is refused unless the operator runs the one-off upgrade, which reseals it as v2."""

# The workorders fixtures are imported so pytest finds them here; their names are then reused
# as test parameters, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text

from tests.integration.workorders.conftest import (  # noqa: F401 - fixtures used by name
    CREATE_SITE,
    Org,
    Running,
    error_code,
    eventually,
    make_customer,
    make_job,
    ok,
    org,
    running,
    workorders_service,
)

pytestmark = pytest.mark.integration

NAME = "Philippa Quenneville"
PHONE = "+44 7700 900555"
EMAIL = "philippa.quenneville@example.org"
HOME = "12 Aniseed Row, Bramblehurst"
DEPOT = "3 Sorrel Yard, Bramblehurst"

CUSTOMER = """query($id: ID!) { customer(id: $id) { id name phone email
  sites { id address } } }"""
JOB = """query($id: ID!) { workOrder(id: $id) { id site { id address
  customer { id name phone email } } } }"""
ERROR_OUTCOME = 3


async def _customer_with_two_sites(running: Running, org: Org) -> tuple[str, str, str]:
    customer_id, home = await make_customer(
        running, org, name=NAME, phone=PHONE, email=EMAIL, address=HOME
    )
    data = await ok(
        running,
        CREATE_SITE,
        {"input": {"customerId": customer_id, "address": DEPOT, "regionId": org.r1}},
        org.dispatcher.token,
    )
    return customer_id, home, data["createSite"]["id"]


async def _sql(running: Running, statement: str, **params: Any) -> Any:
    """The database writer: plain SQL on the service's own database, no service code."""
    async with running.runtime.db.engine.begin() as conn:
        return await conn.execute(text(statement), params)


def _leaks(body: Any, *values: str) -> list[str]:
    blob = json.dumps(body)
    return [v for v in values if v in blob]


def _integrity_events(running: Running, org: Org, customer_id: str) -> list[Any]:
    return [
        e
        for e in running.audit.of(org.id, "customer.contact.read")
        if e.target_id == customer_id
        and e.outcome == ERROR_OUTCOME
        and e.details.get("reason") == "integrity"
    ]


async def test_swapping_two_sites_addresses_fails_safely(running: Running, org: Org) -> None:
    customer_id, home, depot = await _customer_with_two_sites(running, org)
    data = await ok(running, CUSTOMER, {"id": customer_id}, org.admin.token)
    assert {s["id"]: s["address"] for s in data["customer"]["sites"]} == {
        home: HOME,
        depot: DEPOT,
    }

    await _sql(
        running,
        "UPDATE sites SET address = CASE id WHEN :a THEN (SELECT address FROM sites WHERE id = :b)"
        " ELSE (SELECT address FROM sites WHERE id = :a) END WHERE id IN (:a, :b)",
        a=home,
        b=depot,
    )
    body = await running.gql(CUSTOMER, {"id": customer_id}, token=org.admin.token)
    assert error_code(body) == "UNAVAILABLE"
    assert {tuple(e["path"][-1:]) for e in body["errors"]} == {("address",)}
    assert all(s["address"] is None for s in body["data"]["customer"]["sites"])
    assert _leaks(body, HOME, DEPOT) == []
    # The contact fields were not touched: they still read.
    assert body["data"]["customer"]["name"] == NAME
    await eventually(lambda: len(_integrity_events(running, org, customer_id)) >= 2)
    fields = {
        (e.details["field"], e.details["site_id"])
        for e in _integrity_events(running, org, customer_id)
    }
    assert fields == {("address", home), ("address", depot)}


async def test_contact_blob_moved_into_an_address_shows_no_phone_to_a_subcontractor(
    running: Running, org: Org
) -> None:
    site = await make_customer(running, org, name=NAME, phone=PHONE, email=EMAIL, address=HOME)
    job = await make_job(running, org, site=site, assignee=org.sub, start_in=timedelta(minutes=-5))
    data = await ok(running, JOB, {"id": job.work_order_id}, org.sub.token)
    # Honest: a subcontractor reads the address and the name, never phone or email.
    assert data["workOrder"]["site"]["address"] == HOME
    assert data["workOrder"]["site"]["customer"]["phone"] is None

    await _sql(
        running,
        "UPDATE sites SET address = (SELECT contact FROM customers WHERE id = :c) WHERE id = :s",
        c=job.customer_id,
        s=job.site_id,
    )
    body = await running.gql(JOB, {"id": job.work_order_id}, token=org.sub.token)
    assert error_code(body) == "UNAVAILABLE"
    assert body["data"]["workOrder"]["site"]["address"] is None
    assert _leaks(body, PHONE, EMAIL, "7700") == []
    await eventually(lambda: len(_integrity_events(running, org, job.customer_id)) >= 1)


async def test_an_address_moved_into_the_contact_column_fails_safely(
    running: Running, org: Org
) -> None:
    customer_id, site_id = await make_customer(
        running, org, name=NAME, phone=PHONE, email=EMAIL, address=HOME
    )
    await _sql(
        running,
        "UPDATE customers SET contact = (SELECT address FROM sites WHERE id = :s) WHERE id = :c",
        c=customer_id,
        s=site_id,
    )
    body = await running.gql(CUSTOMER, {"id": customer_id}, token=org.admin.token)
    assert error_code(body) == "UNAVAILABLE"
    customer = body["data"]["customer"]
    assert customer["name"] is None and customer["phone"] is None and customer["email"] is None
    assert customer["sites"] == [{"id": site_id, "address": HOME}]  # its own field still reads
    assert _leaks(body["errors"], "Aniseed") == []
    await eventually(lambda: len(_integrity_events(running, org, customer_id)) >= 1)
    # The GDPR export refuses rather than answer with the wrong field.
    body = await running.gql(
        "mutation($id: ID!) { exportCustomerData(customerId: $id) }",
        {"id": customer_id},
        token=org.admin.token,
    )
    assert error_code(body) == "UNAVAILABLE" and _leaks(body, HOME) == []


async def test_a_v1_ciphertext_is_refused_unless_upgrading_and_upgrading_reseals_it(
    running: Running, org: Org
) -> None:
    from services.workorders.crypto import V2_MAGIC

    customer_id, home, depot = await _customer_with_two_sites(running, org)
    row = (
        await _sql(running, "SELECT wrapped_key FROM customers WHERE id = :c", c=customer_id)
    ).one()
    crypto = running.runtime.service.crypto
    key = await crypto.key_for(org.id, customer_id, row.wrapped_key)

    def v1(plaintext: str) -> bytes:  # the format before binding: AD = customer id only
        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), customer_id.encode())

    # Rows written before the fix: v1 everywhere (the depot's is the one a writer would swap).
    await _sql(running, "UPDATE sites SET address = :v WHERE id = :s", v=v1(HOME), s=home)
    old_depot = v1(DEPOT)
    await _sql(running, "UPDATE sites SET address = :v WHERE id = :s", v=old_depot, s=depot)

    body = await running.gql(CUSTOMER, {"id": customer_id}, token=org.admin.token)
    assert error_code(body) == "UNAVAILABLE" and _leaks(body, HOME, DEPOT) == []

    crypto.upgrade_v1 = True  # DOORWARD_WORKORDERS_CONTACT_V1_UPGRADE=true for one run
    try:
        data = await ok(running, CUSTOMER, {"id": customer_id}, org.admin.token)
        assert {s["id"]: s["address"] for s in data["customer"]["sites"]} == {
            home: HOME,
            depot: DEPOT,
        }
    finally:
        crypto.upgrade_v1 = False
    stored = (
        await _sql(running, "SELECT id, address FROM sites WHERE customer_id = :c", c=customer_id)
    ).all()
    assert all(bytes(r.address).startswith(V2_MAGIC) for r in stored)
    data = await ok(running, CUSTOMER, {"id": customer_id}, org.admin.token)
    assert {s["address"] for s in data["customer"]["sites"]} == {HOME, DEPOT}

    # The downgrade: the writer puts the depot's old v1 ciphertext into the home site.
    await _sql(running, "UPDATE sites SET address = :v WHERE id = :s", v=old_depot, s=home)
    body = await running.gql(CUSTOMER, {"id": customer_id}, token=org.admin.token)
    assert error_code(body) == "UNAVAILABLE"
    addresses = {s["id"]: s["address"] for s in body["data"]["customer"]["sites"]}
    assert addresses == {home: None, depot: DEPOT}
