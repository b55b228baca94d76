"""`python -m services.workorders` as a real process: starts from the environment, migrates,
serves GraphQL and gRPC, keeps its credentials out of its logs, and stops by its PID."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from doorward.workorders.v1 import workorders_pb2, workorders_pb2_grpc

from deploy.embedded import stop_pid
from doorward_kit.grpc import ServiceChannel
from doorward_kit.net import free_port
from tests.fixtures.gateway_signing import gateway_keys, signed_as_gateway

pytestmark = pytest.mark.integration


async def test_the_process_starts_serves_and_stops(postgres: Any, service_pki: Any) -> None:
    http_port, grpc_port = free_port(), free_port()
    db_url = postgres.fresh_database("workorders_proc")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOORWARD_")},
        "DOORWARD_WORKORDERS_HTTP_PORT": str(http_port),
        "DOORWARD_WORKORDERS_GRPC_PORT": str(grpc_port),
        "DOORWARD_IDENTITY_HTTP_PORT": str(free_port()),
        "DOORWARD_IDENTITY_GRPC_PORT": str(free_port()),
        "DOORWARD_AUDIT_GRPC_PORT": str(free_port()),
        "DOORWARD_SECRETS_GRPC_PORT": str(free_port()),
        **service_pki.env("workorders"),
        "DOORWARD_WORKORDERS_DB_URL": db_url,
        "DOORWARD_ENV": "production",
        "DOORWARD_GATEWAY_PUBLIC_KEY_FILE": str(gateway_keys().public_file),
    }
    log = Path(tempfile.mkstemp(prefix="doorward-workorders-proc-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.workorders"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[3],
        )
    try:
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        ready = None
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    ready = await client.get(f"{base}/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            assert ready is not None and ready.status_code == 200, log.read_text()[-2000:]
            query = {"query": "{ myJobs { id } }"}
            # Not from the gateway: refused before any GraphQL runs.
            refused_http = await client.post(f"{base}/graphql", json=query)
            assert refused_http.status_code == 401
            body = (
                await client.post(f"{base}/graphql", json=query, auth=signed_as_gateway())
            ).json()
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert "token" in body["errors"][0]["message"]
        request = workorders_pb2.GetAccessContextRequest(
            org_id=str(uuid.uuid4()), work_order_id=str(uuid.uuid4())
        )
        target = f"127.0.0.1:{grpc_port}"
        channel = ServiceChannel(target, service_pki.auth("secrets"), server="workorders")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await workorders_pb2_grpc.WorkOrdersStub(channel.channel).GetAccessContext(request)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await channel.close()
        async with grpc.aio.insecure_channel(target) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await workorders_pb2_grpc.WorkOrdersStub(plain).GetAccessContext(request, timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS, no handshake
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)
    text = log.read_text()
    log.unlink()
    assert "workorders serving" in text
