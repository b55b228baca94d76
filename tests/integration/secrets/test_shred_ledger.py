"""Every customer-key destruction is written to the shred ledger first (ids only); a refused
one writes nothing (doorward_kit/shred_ledger.py, replayed by `doorward backup restore`)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import grpc
import pytest
from doorward.secrets.v1 import secrets_pb2

from doorward_kit import shred_ledger
from doorward_kit.auth import Role
from tests.integration.secrets.conftest import SecretsHarness

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_destruction_is_recorded_before_it_happens(secrets_svc: SecretsHarness, org_id: str):
    h = secrets_svc
    ledger = Path(tempfile.mkdtemp(prefix="doorward-ledger-")) / "shred.jsonl"
    previous = h.service.shred_ledger
    h.service.shred_ledger = ledger
    try:
        customer = str(uuid.uuid4())
        await h.call(
            "CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id=customer)
        )
        # A dispatcher may not destroy the key: refused, nothing recorded.
        with pytest.raises(grpc.aio.AioRpcError):
            await h.call(
                "DestroyCustomerKey",
                secrets_pb2.DestroyCustomerKeyRequest(customer_id=customer),
                h.token(str(uuid.uuid4()), org_id, (Role.DISPATCHER,)),
            )
        assert not ledger.exists()
        await h.call(
            "DestroyCustomerKey",
            secrets_pb2.DestroyCustomerKeyRequest(customer_id=customer),
            h.token(str(uuid.uuid4()), org_id, (Role.ADMIN,)),
        )
        entries = list(shred_ledger.entries(ledger))
        assert [(e.org_id, e.customer_id) for e in entries] == [(org_id, customer)]
        assert oct(ledger.stat().st_mode & 0o777) == "0o600"
    finally:
        h.service.shred_ledger = previous
