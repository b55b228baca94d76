"""A test process starts PostgreSQL, OpenBao and whole stacks (deploy.embedded, deploy.supervisor)
while services it runs in process keep gRPC's threads busy. Those children are started with a
preexec_fn (die_with_parent), so the process forks; with gRPC's fork support on, gRPC's fork
handlers ran in the child and, with another thread inside gRPC, aborted it before its exec: in
CI an OpenBao that "exited with code -11", a third of such children in a tight loop here.
tests/conftest.py turns the fork support off (every child execs at once); this proves children
started during gRPC traffic come up."""

from __future__ import annotations

import asyncio
import os
import subprocess

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy.embedded import die_with_parent

pytestmark = pytest.mark.integration

CHILDREN = 100


def _start_children() -> list[int]:
    codes = []
    for _ in range(CHILDREN):
        child = subprocess.Popen(
            ["true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # as deploy.embedded and deploy.supervisor do
        )
        codes.append(child.wait(timeout=30))
    return codes


async def test_children_started_during_grpc_traffic_come_up() -> None:
    assert os.environ.get("GRPC_ENABLE_FORK_SUPPORT") == "false"
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    calls = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        nonlocal calls
        while not stop.is_set():
            await stub.Check(health_pb2.HealthCheckRequest())
            calls += 1

    callers = [asyncio.create_task(traffic()) for _ in range(8)]
    try:
        codes = await asyncio.get_running_loop().run_in_executor(None, _start_children)
    finally:
        stop.set()
        await asyncio.gather(*callers, return_exceptions=True)
        await channel.close()
        await server.stop(None)
    assert calls > CHILDREN  # the children really were started during traffic
    assert codes == [0] * CHILDREN
