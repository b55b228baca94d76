"""Envelope encryption against real Vault transit (dev-mode OpenBao): the data key really is
wrapped by a per-customer transit key, and deleting that key (eraseCustomer) leaves a backup of
the customer's row unreadable."""

from __future__ import annotations

from typing import Any

import hvac.exceptions
import pytest
from sqlalchemy import text

from deploy.embedded import TRANSIT_MOUNT
from doorward_kit.errors import DoorwardError
from tests.integration.workorders.conftest import Org, Running, make_customer, make_job, ok

pytestmark = pytest.mark.integration

CONTACT = """query($id: ID!) { workOrder(id: $id) { site { address customer { name phone } } } }"""
ERASE = 'mutation($c: ID!) { eraseCustomer(customerId: $c, reason: "GDPR request") { erased } }'


async def test_erasure_with_real_transit_keys(running: Running, org: Org, openbao: Any) -> None:
    vault = openbao.client()
    running.secrets.vault = vault
    try:
        site = await make_customer(
            running, org, name="Vault Person", phone="+1 555 0100 222", address="9 Transit Way"
        )
        job = await make_job(running, org, site=site)
        running.runtime.service.crypto.cache.forget(job.customer_id)
        data = await ok(running, CONTACT, {"id": job.work_order_id}, org.dispatcher.token)
        assert data["workOrder"]["site"]["customer"]["name"] == "Vault Person"
        assert data["workOrder"]["site"]["address"] == "9 Transit Way"
        async with running.runtime.db.engine.connect() as conn:
            backup = (
                await conn.execute(
                    text("SELECT wrapped_key FROM customers WHERE id = :id"),
                    {"id": job.customer_id},
                )
            ).one()
        wrapped = bytes(backup.wrapped_key)
        assert wrapped.startswith(b"vault:v1:")  # wrapped by transit, not the plaintext key

        await ok(running, ERASE, {"c": job.customer_id}, org.admin.token)
        with pytest.raises(hvac.exceptions.VaultError):
            vault.secrets.transit.decrypt_data(
                name=f"wo-test-{job.customer_id}",
                ciphertext=wrapped.decode(),
                mount_point=TRANSIT_MOUNT,
            )
        crypto = running.runtime.service.crypto
        crypto.cache.forget(job.customer_id)
        with pytest.raises(DoorwardError):
            await crypto.key_for(org.id, job.customer_id, wrapped)
    finally:
        running.secrets.vault = None
