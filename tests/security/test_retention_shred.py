"""Issue 14, R2: the retention purge crypto-shreds customer keys with workorders' own
certificate (no user token), so the secrets service bounds it: only workorders may ask, never
for a period shorter than the least an administrator can set (30 days), never for a key made
after the cut-off. The honest purge (tests/integration/secrets/test_retention_shred.py) passes."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from doorward.secrets.v1 import secrets_pb2

from doorward_kit import shred_ledger
from tests.integration.secrets.conftest import SecretsHarness, running_secrets

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shredder(postgres: Any, openbao: Any) -> AsyncIterator[SecretsHarness]:
    async with running_secrets(
        db_url=postgres.fresh_database("secrets_retention_shred"),
        vault_addr=openbao.addr,
        role_id=openbao.role_id,
        secret_id=openbao.secret_id,
        secrets_shred_ledger=str(Path(tempfile.mkdtemp(prefix="doorward-ledger-")) / "shred.jsonl"),
    ) as harness:
        yield harness


async def test_only_workorders_may_shred_and_not_a_customer_within_the_period(
    shredder: SecretsHarness,
) -> None:
    h = shredder
    assert h.service.shred_ledger is not None
    ledger = h.service.shred_ledger
    org_id, customer_id = str(uuid.uuid4()), str(uuid.uuid4())
    made = await h.call(
        "CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id=customer_id)
    )
    now = datetime.now(UTC)

    def request(before: datetime) -> secrets_pb2.ShredRetainedCustomersRequest:
        stamp = secrets_pb2.ShredRetainedCustomersRequest(org_id=org_id, customer_ids=[customer_id])
        stamp.before.FromDatetime(before)
        return stamp

    # Any other service (identity, audit) is refused by the allow-list, whatever it asks.
    for caller in ("identity", "audit"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.call(
                "ShredRetainedCustomers", request(now - timedelta(days=400)), caller=caller
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Workorders cannot shorten the period below the least an administrator can set.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.call("ShredRetainedCustomers", request(now - timedelta(days=29)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nor shred a key made after the cut-off (a customer added within the period).
    reply = await h.call("ShredRetainedCustomers", request(now - timedelta(days=31)))
    assert list(reply.shredded_customer_ids) == [] and reply.destroyed == 0
    assert list(shred_ledger.entries(ledger)) == []
    key = await h.call(
        "DecryptDataKey",
        secrets_pb2.DecryptDataKeyRequest(
            org_id=org_id, customer_id=customer_id, ciphertext=made.ciphertext
        ),
    )
    assert bytes(key.plaintext) == bytes(made.plaintext)

    # The honest purge, once the customer is past the period: shredded, ledger entry first.
    later = now + timedelta(days=400)
    previous = h.service.clock
    h.service.clock = lambda: later
    try:
        reply = await h.call("ShredRetainedCustomers", request(later - timedelta(days=365)))
    finally:
        h.service.clock = previous
    assert list(reply.shredded_customer_ids) == [customer_id] and reply.destroyed == 1
    assert [(e.customer_id, e.kind) for e in shred_ledger.entries(ledger)] == [
        (customer_id, shred_ledger.RETENTION)
    ]
    with pytest.raises(grpc.aio.AioRpcError):
        await h.call(
            "DecryptDataKey",
            secrets_pb2.DecryptDataKeyRequest(
                org_id=org_id, customer_id=customer_id, ciphertext=made.ciphertext
            ),
        )
