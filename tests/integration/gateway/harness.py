"""Runs the three test subgraphs with uvicorn in background threads on free ports."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import httpx
import uvicorn
from strawberry.asgi import GraphQL

from doorward_kit.net import free_port
from tests.integration.gateway.subgraphs import accounts, products, reviews

logging.getLogger("strawberry.execution").setLevel(logging.CRITICAL)

SUBGRAPHS = {"accounts": accounts.schema, "products": products.schema, "reviews": reviews.schema}


@dataclass
class RunningSubgraphs:
    urls: dict[str, str] = field(default_factory=dict)
    servers: list[tuple[uvicorn.Server, threading.Thread]] = field(default_factory=list)

    def sdls(self) -> dict[str, tuple[str, str]]:
        out = {}
        for name, url in self.urls.items():
            r = httpx.post(url, json={"query": "{ _service { sdl } }"}, timeout=10)
            out[name] = (url, r.json()["data"]["_service"]["sdl"])
        return out

    def stop(self) -> None:
        for server, _ in self.servers:
            server.should_exit = True
        for _, thread in self.servers:
            thread.join(timeout=10)


def start_subgraphs(host: str = "127.0.0.1") -> RunningSubgraphs:
    running = RunningSubgraphs()
    for name, schema in SUBGRAPHS.items():
        port = free_port(host)
        config = uvicorn.Config(GraphQL(schema), host=host, port=port, log_level="warning",
                                lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True, name=f"subgraph-{name}")
        thread.start()
        running.servers.append((server, thread))
        running.urls[name] = f"http://{host}:{port}/graphql"
    deadline = time.monotonic() + 20
    for server, _ in running.servers:
        while not server.started:
            if time.monotonic() > deadline:
                running.stop()
                raise RuntimeError("test subgraphs did not start")
            time.sleep(0.02)
    return running
