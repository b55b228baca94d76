"""Issue 14: SetOrgRetention (an organisation's trace retention, kept by the trace store) takes
no user token, so the store's allow-list is its lock: only workorders' certificate (the purge)
is admitted; audit (the store's reader), identity, secrets and the gateway are refused and
change nothing. The honest purge's call passes. A value out of bounds is refused too."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from doorward.traces.v1 import traces_pb2, traces_pb2_grpc

from doorward_kit.grpc import ServiceChannel
from tests.integration.traces.harness import running_store

pytestmark = pytest.mark.integration


async def _set(s: Any, caller: str, org_id: str, days: int) -> traces_pb2.SetOrgRetentionResponse:
    channel = ServiceChannel(s.grpc_target, s.pki.auth(caller), server="traces")
    try:
        stub = traces_pb2_grpc.TracesStub(channel.channel)
        request = traces_pb2.SetOrgRetentionRequest(org_id=org_id, days=days)
        reply: traces_pb2.SetOrgRetentionResponse = await stub.SetOrgRetention(
            request, metadata=channel.metadata(None)
        )
        return reply
    finally:
        await channel.close()


async def test_only_the_purge_sets_an_organisations_trace_retention(postgres: Any) -> None:
    org_id = str(uuid.uuid4())
    async with running_store(postgres, traces_retention_days=14) as s:
        for caller in ("audit", "identity", "secrets", "gateway"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _set(s, caller, org_id, 1)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, caller
        for bad in (0, 3651):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _set(s, "workorders", org_id, bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert org_id not in s.store.org_retention
        conn = await asyncpg.connect(s.dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM org_retention") == 0
            reply = await _set(s, "workorders", org_id, 7)
            assert reply.effective_days == 7.0
            assert (
                await conn.fetchval("SELECT days FROM org_retention WHERE org_id = $1", org_id) == 7
            )
        finally:
            await conn.close()
        assert s.store.horizon(org_id) > s.store.horizon()  # shorter than the store's own
