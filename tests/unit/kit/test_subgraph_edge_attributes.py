"""The subgraph edge's server span attributes are remembered per distinct input
(doorward_kit/subgraph_edge.py `_request_attributes`): whatever the request, remembered or not,
they are exactly what the OpenTelemetry instrumentation collects from that request's scope (plus
the route), and a request differing in any input the instrumentation reads gets its own."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import strawberry
from opentelemetry.instrumentation.asgi import collect_request_attributes
from opentelemetry.semconv.trace import SpanAttributes

from doorward_kit.auth import NoSessionGuard, StaticJwksSource, TokenVerifier
from doorward_kit.gateway_signature import GatewayVerifier
from doorward_kit.graphql import GatewayGate, SubgraphSchema, subgraph_router
from doorward_kit.subgraph_edge import SubgraphEdge
from tests.fixtures.gateway_signing import gateway_keys

pytestmark = pytest.mark.unit


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"


def _edge() -> SubgraphEdge:
    router = subgraph_router(
        SubgraphSchema(query=Query),
        verifier=TokenVerifier(StaticJwksSource({"keys": []}), NoSessionGuard()),
        services=None,
        gate=GatewayGate(GatewayVerifier.from_file(gateway_keys().public_file)),
    )
    return SubgraphEdge(router)


def _scope(
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    host: list[bytes] | None = None,
    agent: list[bytes] | None = None,
    query: bytes = b"",
    server: tuple[str, int] | None = ("127.0.0.1", 8080),
    version: str = "1.1",
    scheme: str = "http",
) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer t")]
    headers += [(b"host", value) for value in (host if host is not None else [b"127.0.0.1:8080"])]
    headers += [(b"user-agent", value) for value in agent or []]
    return {
        "type": "http",
        "http_version": version,
        "method": "POST",
        "scheme": scheme,
        "path": "/graphql",
        "query_string": query,
        "headers": headers,
        "client": client,
        "server": server,
    }


VARIANTS = [
    _scope(),
    _scope(client=("127.0.0.1", 50001)),
    _scope(client=("10.0.0.9", 50000)),
    _scope(client=None),
    _scope(host=[]),
    _scope(host=[b"identity.internal:9000"]),
    _scope(host=[b"a", b"b"]),
    _scope(agent=[b"python-httpx/0.28"]),
    _scope(agent=[b"Googlebot/2.1"]),
    _scope(query=b"x=1"),
    _scope(server=("::1", 80)),
    _scope(server=None),
    _scope(version="2"),
    _scope(scheme="https"),
]


def test_the_remembered_attributes_are_the_instrumentations() -> None:
    edge = _edge()
    # Every variant twice, in two orders: the second sight is from memory.
    for scope in itertools.chain(VARIANTS, reversed(VARIANTS), VARIANTS):
        expected = collect_request_attributes(scope, edge._mode)
        expected[SpanAttributes.HTTP_ROUTE] = "/graphql"
        assert edge._request_attributes(scope) == expected
    assert len(edge._attributes) == len(VARIANTS)  # each input its own entry


def test_a_span_cannot_change_what_is_remembered() -> None:
    edge = _edge()
    first = edge._request_attributes(_scope())
    first["http.status_code"] = 500  # what a span does with its attributes later
    assert "http.status_code" not in edge._request_attributes(_scope())
