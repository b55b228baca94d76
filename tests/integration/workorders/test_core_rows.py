"""Sites and customers are read as plain rows (issue 11): no ORM object is built for a read,
so what a read writes back, the v2 form of a v1 ciphertext in upgrade mode, is a targeted
UPDATE. These tests prove the re-seal still lands, for the contact blob and for an address, and
that it never writes contact data back over a row that changed since it was read (an erasure)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text

from services.workorders.crypto import V2_MAGIC
from services.workorders.repository import Repository
from tests.integration.workorders.conftest import Org, Running, make_customer, ok

pytestmark = pytest.mark.integration

NAME = "Ottoline Brackenbury"
PHONE = "+44 7700 900777"
EMAIL = "ottoline.brackenbury@example.org"
HOME = "4 Quince Walk, Hollowmere"

CUSTOMER = """query($id: ID!) { customer(id: $id) { id name phone email
  sites { id address } } }"""


async def _sql(running: Running, statement: str, **params: Any) -> Any:
    """Plain SQL on the service's own database, no service code."""
    async with running.runtime.db.engine.begin() as conn:
        return await conn.execute(text(statement), params)


async def _v1(running: Running, org: Org, customer_id: str) -> Any:
    """A sealer of the format before binding (AD = the customer id only)."""
    row = (
        await _sql(running, "SELECT wrapped_key FROM customers WHERE id = :c", c=customer_id)
    ).one()
    key = await running.runtime.service.crypto.key_for(org.id, customer_id, row.wrapped_key)

    def seal(plaintext: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), customer_id.encode())

    return seal


async def test_upgrade_mode_reseals_contact_and_address_in_place(
    running: Running, org: Org
) -> None:
    customer_id, site_id = await make_customer(
        running, org, name=NAME, phone=PHONE, email=EMAIL, address=HOME
    )
    v1 = await _v1(running, org, customer_id)
    contact = f'{{"name": "{NAME}", "phone": "{PHONE}", "email": "{EMAIL}"}}'
    await _sql(
        running, "UPDATE customers SET contact = :v WHERE id = :c", v=v1(contact), c=customer_id
    )
    await _sql(running, "UPDATE sites SET address = :v WHERE id = :s", v=v1(HOME), s=site_id)

    crypto = running.runtime.service.crypto
    crypto.upgrade_v1 = True
    try:
        data = await ok(running, CUSTOMER, {"id": customer_id}, org.admin.token)
    finally:
        crypto.upgrade_v1 = False
    assert data["customer"]["name"] == NAME and data["customer"]["email"] == EMAIL
    assert data["customer"]["sites"] == [{"id": site_id, "address": HOME}]

    stored = (
        await _sql(
            running,
            "SELECT c.contact, s.address FROM customers c JOIN sites s ON s.customer_id = c.id "
            "WHERE c.id = :c",
            c=customer_id,
        )
    ).one()
    assert bytes(stored.contact).startswith(V2_MAGIC)
    assert bytes(stored.address).startswith(V2_MAGIC)
    # Out of upgrade mode the v2 forms open (a v1 one would be refused).
    data = await ok(running, CUSTOMER, {"id": customer_id}, org.admin.token)
    assert data["customer"]["phone"] == PHONE
    assert data["customer"]["sites"] == [{"id": site_id, "address": HOME}]


async def test_a_reseal_never_writes_over_a_row_changed_since_its_read(
    running: Running, org: Org
) -> None:
    customer_id, site_id = await make_customer(running, org, address=HOME)
    before = (
        await _sql(
            running,
            "SELECT c.contact, s.address FROM customers c JOIN sites s ON s.customer_id = c.id "
            "WHERE c.id = :c",
            c=customer_id,
        )
    ).one()
    # The customer is erased between the read and the re-seal of what it read.
    await _sql(
        running,
        "UPDATE customers SET contact = NULL, wrapped_key = NULL, erased_at = now() WHERE id = :c",
        c=customer_id,
    )
    await _sql(running, "UPDATE sites SET address = NULL WHERE customer_id = :c", c=customer_id)
    async with running.runtime.db.unit_of_work() as session:
        repo = Repository(session)
        await repo.reseal_contact(org.id, customer_id, bytes(before.contact), b"dwc2 resealed")
        await repo.reseal_address(org.id, site_id, bytes(before.address), b"dwc2 resealed")
        # Another organisation's id never matches either.
        await repo.reseal_address("another-org", site_id, b"", b"dwc2 resealed")
    after = (
        await _sql(
            running,
            "SELECT c.contact, s.address FROM customers c JOIN sites s ON s.customer_id = c.id "
            "WHERE c.id = :c",
            c=customer_id,
        )
    ).one()
    assert (after.contact, after.address) == (None, None)
