"""Three strawberry subgraphs and gateways over them, each on a free port in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from doorward_kit.net import free_port
from doorward_kit.settings import StackSettings
from gateway.server import create_app
from gateway.settings import GatewaySettings
from tests.integration.gateway.harness import RunningSubgraphs, start_subgraphs


@dataclass
class RunningGateway:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def post(self, query: str, variables: dict | None = None, headers: dict | None = None,
             **extra) -> httpx.Response:
        body = {"query": query, **extra}
        if variables is not None:
            body["variables"] = variables
        return httpx.post(self.url, json=body, headers=headers or {}, timeout=15)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_gateway(settings: GatewaySettings, authenticator=None, supergraph_sdl=None
                  ) -> RunningGateway:
    port = free_port()
    app = create_app(settings, authenticator, supergraph_sdl)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="gateway")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    return RunningGateway(f"http://127.0.0.1:{port}/graphql", server, thread)


def gateway_settings(urls: dict[str, str], **kw) -> GatewaySettings:
    kw.setdefault("auth_enabled", False)
    kw.setdefault("subgraph_timeout", 1.0)
    kw.setdefault("startup_timeout", 10.0)
    return GatewaySettings(stack=StackSettings(env=kw.pop("env", "development")),
                           subgraphs=urls, **kw)


@pytest.fixture(scope="session")
def subgraphs() -> Iterator[RunningSubgraphs]:
    running = start_subgraphs()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def gateway(subgraphs: RunningSubgraphs) -> Iterator[RunningGateway]:
    gw = start_gateway(gateway_settings(subgraphs.urls, rate_limit_per_second=0))
    try:
        yield gw
    finally:
        gw.stop()
