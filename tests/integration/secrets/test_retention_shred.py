"""Issue 14, R2: the retention purge of a customer's contact data crypto-shreds like an erasure
(the customer's transit key destroyed, a pseudonymous shred-ledger entry written first), so a
restore of a backup taken before the purge cannot bring the contact data back.

The real secrets service (its Vault, its database), the real workorders purge over a database
with the real migrations, the real `doorward backup restore` ledger replay. The test's OpenBao
runs in dev mode (no raft snapshot), so the "backup" of the customer's key is a transit key
backup taken with the root token and the "restore" puts it and the old rows back: the same
state a restored archive starts from (key and ciphertexts as they were before the purge)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import hvac
import pytest
import pytest_asyncio
from doorward.secrets.v1 import secrets_pb2
from sqlalchemy.engine import make_url

from deploy.backup.restore import replay
from doorward_kit import shred_ledger
from doorward_kit.db import Database, run_migrations_async
from services.secrets.service.rules import customer_key_name
from services.workorders.__main__ import MIGRATIONS
from services.workorders.clients import GrpcSecrets
from services.workorders.crypto import (
    address_binding,
    contact_binding,
    open_sealed,
    seal,
)
from services.workorders.models import Customer, Site, WorkOrder
from services.workorders.purge import Purge
from tests.integration.secrets.conftest import SecretsHarness, error_code
from tests.integration.secrets.shred_replay import Databases, Vault

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TRANSIT = "doorward-transit"
# The purge runs three years from now: a customer added today with no job since is past the
# default two years of contact-data retention. The secrets service's clock moves with it.
LATER = datetime.now(UTC) + timedelta(days=3 * 365)
CONTACT = '{"name": "Ada Example", "phone": "+44 7700 900123", "email": "ada@example.com"}'


@pytest_asyncio.fixture(loop_scope="session")
async def wo_db(postgres: Any) -> AsyncIterator[tuple[Database, str]]:
    url = postgres.fresh_database("retention_shred")
    await run_migrations_async(MIGRATIONS, url)
    database = Database(url, pool_size=4)
    try:
        yield database, url
    finally:
        await database.dispose()


@pytest.fixture
def ledger(secrets_svc: SecretsHarness) -> Iterator[Path]:
    """A shred ledger of this test's own; the ledger and the clock (tests move it) put back."""
    h = secrets_svc
    ledger = Path(tempfile.mkdtemp(prefix="doorward-ledger-")) / "shred.jsonl"
    previous = h.service.shred_ledger, h.service.clock
    h.service.shred_ledger = ledger
    try:
        yield ledger
    finally:
        h.service.shred_ledger, h.service.clock = previous


@dataclass
class Stored:
    customer: Customer
    site: Site
    key_name: str


async def _customer(h: SecretsHarness, db: Database, org_id: str, *, open_job: bool) -> Stored:
    customer_id, site_id = str(uuid.uuid4()), str(uuid.uuid4())
    key = await h.call(
        "CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id=customer_id)
    )
    customer = Customer(
        id=customer_id,
        org_id=org_id,
        region_id="r1",
        wrapped_key=bytes(key.ciphertext),
        key_version=key.key_version,
        contact=seal(bytes(key.plaintext), contact_binding(customer_id), CONTACT),
        created_at=datetime.now(UTC) - timedelta(days=1),
    )
    site = Site(
        id=site_id,
        org_id=org_id,
        customer_id=customer_id,
        region_id="r1",
        address=seal(bytes(key.plaintext), address_binding(customer_id, site_id), "1 Lane"),
        created_at=customer.created_at,
    )
    async with db.unit_of_work() as session:
        session.add(customer)
        await session.flush()
        session.add(site)
        if open_job:
            await session.flush()
            session.add(
                WorkOrder(
                    id=str(uuid.uuid4()),
                    org_id=org_id,
                    number=uuid.uuid4().int % 10**9,
                    site_id=site_id,
                    region_id="r1",
                    title="Lock change",
                    status="SCHEDULED",
                    priority="NORMAL",
                    created_by="u",
                    created_at=customer.created_at,
                    updated_at=customer.created_at,
                )
            )
    return Stored(customer, site, customer_key_name(org_id, customer_id))


async def _readable(h: SecretsHarness, org_id: str, customer: Customer, contact: bytes) -> bool:
    """Whether the stored ciphertext opens with the key the secrets service can unwrap."""
    try:
        reply = await h.call(
            "DecryptDataKey",
            secrets_pb2.DecryptDataKeyRequest(
                org_id=org_id, customer_id=customer.id, ciphertext=customer.wrapped_key
            ),
        )
    except grpc.aio.AioRpcError as error:
        assert error_code(error) == "NOT_FOUND", error.details()
        return False
    return (
        open_sealed(bytes(reply.plaintext), contact_binding(customer.id), contact).text == CONTACT
    )


async def _row(db: Database, customer_id: str) -> tuple[Customer, Site]:
    async with db.unit_of_work() as session:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        await session.refresh(customer)
        site = (
            await session.execute(Site.__table__.select().where(Site.customer_id == customer_id))
        ).one()
        return customer, site


def _backup_key(root: hvac.Client, name: str) -> str:
    root.adapter.post(
        f"/v1/{TRANSIT}/keys/{name}/config",
        json={"exportable": True, "allow_plaintext_backup": True},
    )
    return str(root.adapter.get(f"/v1/{TRANSIT}/backup/{name}")["data"]["backup"])


async def test_a_retention_purged_customer_stays_unreadable_after_a_restore(
    secrets_svc: SecretsHarness,
    ledger: Path,
    wo_db: tuple[Database, str],
    postgres: Any,
    openbao: Any,
) -> None:
    h = secrets_svc
    db, wo_url = wo_db
    org_id = str(uuid.uuid4())
    stale = await _customer(h, db, org_id, open_job=False)
    kept = await _customer(h, db, org_id, open_job=True)
    # The stale customer's site has a door code: its own retention (siteSecretDays), not this.
    ref_id, _ = await h.new_secret(org_id, "4711#", site_id=stale.site.id)
    assert await _readable(h, org_id, stale.customer, stale.customer.contact or b"")

    # The backup: the key (as the raft snapshot holds it) and the rows (as pg_dump does).
    root = openbao.client()
    key_backup = _backup_key(root, stale.key_name)
    old_contact, old_address = stale.customer.contact, stale.site.address

    h.service.clock = lambda: LATER  # put back by the fixture
    purge = Purge(
        db,
        clock=lambda: LATER,
        shred_customers=GrpcSecrets(h.channel).shred_retained_customers,
    )
    result = await purge.run_once()
    assert result.ran and result.customers == 1

    # The purge went through the crypto-shred path: ledger first, key gone, rows cleared.
    entries = list(shred_ledger.entries(ledger))
    assert [(e.org_id, e.customer_id, e.kind) for e in entries] == [
        (org_id, stale.customer.id, shred_ledger.RETENTION)
    ]
    assert not await _readable(h, org_id, stale.customer, old_contact or b"")
    customer, site = await _row(db, stale.customer.id)
    assert customer.erased_at is not None and customer.contact is None and site.address is None
    event = await h.audit.wait_for(org_id, "customer.key.destroy", reason="retention")
    assert event.target_id == stale.customer.id and event.actor_id == ""
    assert CONTACT not in ledger.read_text() and "Ada" not in str(event)
    # The customer with an open job keeps key and data.
    assert await _readable(h, org_id, kept.customer, kept.customer.contact or b"")

    # The restore: the key and the rows as the backup had them. Without the ledger's replay
    # the purged contact data would open again: the gap this closes.
    root.adapter.post(f"/v1/{TRANSIT}/restore/{stale.key_name}", json={"backup": key_backup})
    conn = await asyncpg.connect(postgres.server.admin_url(make_url(wo_url).database))
    try:
        await conn.execute(
            "UPDATE customers SET contact = $2, wrapped_key = $3, erased_at = NULL WHERE id = $1",
            stale.customer.id,
            old_contact,
            stale.customer.wrapped_key,
        )
        await conn.execute(
            "UPDATE sites SET address = $2 WHERE id = $1", stale.site.id, old_address
        )
    finally:
        await conn.close()
    assert await _readable(h, org_id, stale.customer, old_contact or b"")

    said: list[str] = []
    replayed = await asyncio.to_thread(
        replay, ledger, Databases(postgres, h.db_url, wo_url), Vault(openbao), said.append
    )
    assert replayed.keys == 1 and replayed.customers == 1 and replayed.site_secrets == 0
    assert [e.customer_id for e in replayed.replayed] == [stale.customer.id]

    # After the replay: unreadable again, rows erased, addresses gone; the site's door code
    # (its own retention period) and the other customer untouched.
    assert not await _readable(h, org_id, stale.customer, old_contact or b"")
    customer, site = await _row(db, stale.customer.id)
    assert customer.erased_at is not None and customer.contact is None
    assert customer.wrapped_key is None and site.address is None
    refs = await h.call(
        "GetSecretRefs", secrets_pb2.GetSecretRefsRequest(org_id=org_id, secret_ref_ids=[ref_id])
    )
    assert [r.id for r in refs.secret_refs] == [ref_id]
    assert await _readable(h, org_id, kept.customer, kept.customer.contact or b"")
    # A second run changes nothing (idempotent).
    assert (await purge.run_once()).customers == 0
