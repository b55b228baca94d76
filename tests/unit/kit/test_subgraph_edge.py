"""A subgraph's POST /graphql is answered by one pure ASGI layer (doorward_kit/subgraph_edge.py)
instead of FastAPI's stack. Side by side, the same requests through both: the same status,
headers, body and server span for honest requests, every refusal of the gate (no, a bad or a
replayed signature; a body over the limit; a ledger that cannot tell or has seen the nonce),
strawberry's own refusals, GraphQL errors and an unexpected failure. And the edge is what a
service's app answers POST /graphql with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import strawberry
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import doorward_kit.http as kit_http
from doorward_kit.auth import NoSessionGuard, StaticJwksSource, TokenVerifier
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.gateway_signature import GatewayVerifier
from doorward_kit.graphql import (
    GatewayGate,
    RequestContext,
    SubgraphRouter,
    SubgraphSchema,
    schema_extensions,
    subgraph_router,
)
from doorward_kit.nonce_ledger import unavailable
from doorward_kit.subgraph_edge import SubgraphEdge, mount_subgraph
from doorward_kit.telemetry import current_trace_id, instrument_fastapi
from tests.fixtures.gateway_signing import gateway_keys

pytestmark = pytest.mark.unit

LIMIT = 4096
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"

    @strawberry.field
    async def whoami(self, info: strawberry.Info) -> str:
        context: RequestContext = info.context
        # Resolvers run inside the server span (SQL statements get spans only inside a trace).
        return f"{context.source_ip}|{context.raw_token}|{current_trace_id()}"

    @strawberry.field
    def echo(self, f: float | None = None, s: str | None = None) -> str:
        return f"{f}|{s}"

    @strawberry.field
    def refused(self) -> str:
        raise DoorwardError(ErrorCode.FORBIDDEN, "not yours")

    @strawberry.field
    def broken(self) -> str:
        raise RuntimeError("a bug with a secret in it")


@strawberry.type
class Mutation:
    @strawberry.mutation
    def touch(self, label: str) -> str:
        return label.upper()


class Ledger:
    """A NonceLedger whose answer the test chooses (the real one: tests/security)."""

    def __init__(self) -> None:
        self.mode = "fresh"

    async def claim(self, nonce: str, stamp: int, keep_seconds: float) -> bool:
        if self.mode == "down":
            raise unavailable()
        return self.mode == "fresh"


class Side:
    """One app (through the edge or through FastAPI's stack) with its own spans and gate."""

    def __init__(self, edge: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.ledger = Ledger()
        gate = GatewayGate(
            GatewayVerifier.from_file(gateway_keys().public_file),
            nonces=self.ledger,
            max_body_bytes=LIMIT,
        )
        provider = self.provider
        monkeypatch.setattr(
            kit_http,
            "instrument_fastapi",
            lambda app, edge=False: instrument_fastapi(app, edge=edge, tracer_provider=provider),
        )
        self.app = kit_http.create_app("doorward-test")
        router = subgraph_router(
            SubgraphSchema(query=Query, mutation=Mutation, extensions=schema_extensions()),
            verifier=TokenVerifier(StaticJwksSource({"keys": []}), NoSessionGuard()),
            services=None,
            gate=gate,
        )
        assert isinstance(router, SubgraphRouter)
        self.app.include_router(router, prefix="/graphql")
        if edge:
            self.app.post_edges["/graphql"] = SubgraphEdge(router, tracer_provider=provider)

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        self.exporter.clear()
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://subgraph") as client:
            return await client.post("/graphql", content=body, headers=headers)

    def spans(self) -> list[dict[str, Any]]:
        """What each finished span says, but its ids and times."""
        out = []
        for span in self.exporter.get_finished_spans():
            out.append(
                {
                    "name": span.name,
                    "kind": span.kind,
                    "attributes": dict(span.attributes or {}),
                    "status": (span.status.status_code, span.status.description),
                    "events": [e.name for e in span.events],
                    "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
                    "parent": span.parent.span_id if span.parent else None,
                    # A new trace's id is random: compared only where a parent was given.
                    "trace": span.context.trace_id if span.parent else None,
                }
            )
        return sorted(out, key=lambda s: s["name"])


@pytest.fixture
def sides(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Side, Side]]:
    edge = Side(True, monkeypatch)
    stack = Side(False, monkeypatch)
    yield edge, stack


def signed(body: bytes, **extra: str) -> dict[str, str]:
    headers = gateway_keys().signer.headers("POST", "/graphql", body, "198.51.100.7")
    headers["content-type"] = "application/json"
    headers["traceparent"] = TRACEPARENT
    headers.update(extra)
    return headers


def comparable(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in response.headers.multi_items() if k != "date")


def content(response: httpx.Response) -> Any:
    if response.headers["content-type"] == "application/json":
        return response.json()
    return response.text


def doc(payload: Any) -> bytes:
    return json.dumps(payload).encode()


CASES: dict[str, tuple[bytes, dict[str, str]]] = {
    "query": (doc({"query": "{ hello }"}), {}),
    "context": (doc({"query": "{ whoami }"}), {"authorization": "Bearer t0ken"}),
    "variables": (
        doc(
            {
                "query": "query($f: Float, $s: String) { echo(f: $f, s: $s) }",
                "variables": {"f": 1.5, "s": "Grüße «Zoë»"},
            }
        ),
        {},
    ),
    "not-a-number": (b'{"query": "query($f: Float) { echo(f: $f) }", "variables": {"f": NaN}}', {}),
    "mutation": (doc({"query": 'mutation { touch(label: "a") }'}), {}),
    "operation-name": (
        doc({"query": "query A { hello } query B { echo }", "operationName": "B"}),
        {},
    ),
    "unknown-operation": (
        doc({"query": "query A { hello } query B { echo }", "operationName": "C"}),
        {},
    ),
    "subscription": (doc({"query": "subscription { hello }"}), {}),
    "validation-error": (doc({"query": "{ nope }"}), {}),
    "parse-error": (doc({"query": "{"}), {}),
    "doorward-error": (doc({"query": "{ refused }"}), {}),
    "internal-error": (doc({"query": "{ broken hello }"}), {}),
    "text-policy": (doc({"query": '{ echo(s: "a\\u0000b") }'}), {}),
    "wrong-content-type": (doc({"query": "{ hello }"}), {"content-type": "text/plain"}),
    "not-json": (b"{nope", {}),
    "not-utf8": (b'{"query": "{ hello }\xff"}', {}),
    "batch": (doc([{"query": "{ hello }"}]), {}),
    "not-an-object": (b"7", {}),
    "query-not-a-string": (doc({"query": 7}), {}),
    "variables-not-an-object": (doc({"query": "{ hello }", "variables": [1]}), {}),
    "extensions-not-an-object": (doc({"query": "{ hello }", "extensions": 3}), {}),
    "no-query": (doc({}), {}),
    "too-large": (doc({"query": "{ hello }", "variables": {"s": "x" * LIMIT}}), {}),
}


async def same_answer(
    sides: tuple[Side, Side], body: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    (edge, stack) = sides
    by_edge = await edge.post(body, headers)
    edge_spans = edge.spans()
    by_stack = await stack.post(body, headers)
    stack_spans = stack.spans()
    assert by_edge.status_code == by_stack.status_code, (by_edge.text, by_stack.text)
    if by_stack.status_code == 500:
        # FastAPI's error middleware sits outside the security headers: its 500 had none. The
        # edge adds them to every answer.
        assert set(comparable(by_stack)) < set(comparable(by_edge))
    else:
        assert comparable(by_edge) == comparable(by_stack)
    assert content(by_edge) == content(by_stack)
    assert edge_spans == stack_spans
    return by_edge, edge_spans


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_edge_answers_as_fastapi_did(sides: tuple[Side, Side], case: str) -> None:
    body, extra = CASES[case]
    answer, spans = await same_answer(sides, body, signed(body, **extra))
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    server = [s for s in spans if s["name"] == "POST /graphql"]
    assert len(server) == 1 and server[0]["kind"] is trace.SpanKind.SERVER
    assert server[0]["attributes"]["http.route"] == "/graphql"
    # The gateway's trace is continued: an internal hop.
    assert server[0]["trace"] == int(TRACEPARENT.split("-")[1], 16)
    assert server[0]["parent"] == int(TRACEPARENT.split("-")[2], 16)
    if case == "context":
        trace_id = TRACEPARENT.split("-")[1]
        assert answer.json() == {"data": {"whoami": f"198.51.100.7|t0ken|{trace_id}"}}
    if case == "too-large":
        assert answer.status_code == 413
        assert answer.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    if case == "internal-error":
        assert "secret" not in answer.text
    if case == "not-an-object":
        assert answer.status_code == 500


async def test_requests_the_gateway_did_not_sign_are_refused_by_both(
    sides: tuple[Side, Side],
) -> None:
    body = doc({"query": "{ whoami }"})
    unsigned = {"content-type": "application/json", "authorization": "Bearer t0ken"}
    answer, _ = await same_answer(sides, body, unsigned)
    assert answer.status_code == 401
    assert "no gateway signature" in answer.json()["errors"][0]["message"]
    # A signature over another body.
    forged = signed(doc({"query": "{ hello }"}))
    answer, _ = await same_answer(sides, body, forged)
    assert answer.status_code == 401 and "data" not in answer.json()
    assert "invalid gateway signature" in answer.text


async def test_a_replayed_request_is_refused_by_both(sides: tuple[Side, Side]) -> None:
    edge, stack = sides
    body = doc({"query": "{ hello }"})
    headers = signed(body)
    for side in (edge, stack):
        assert (await side.post(body, headers)).status_code == 200
        again = await side.post(body, headers)
        assert again.status_code == 401 and "replayed" in again.text
    # Seen by another replica (the ledger says so): refused before anything runs.
    for side in sides:
        side.ledger.mode = "seen"
    answer, _ = await same_answer(sides, body, signed(body))
    assert answer.status_code == 401 and "replayed" in answer.text


async def test_a_ledger_that_cannot_tell_refuses_in_both(sides: tuple[Side, Side]) -> None:
    for side in sides:
        side.ledger.mode = "down"
    body = doc({"query": "{ hello }"})
    answer, _ = await same_answer(sides, body, signed(body))
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert "data" not in answer.json()


def _signed_post_scope() -> dict[str, Any]:
    """The ASGI scope of a signed POST /graphql whose body the test's `receive` hands over."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in signed(b"whatever").items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
    }


async def test_a_body_over_the_limit_is_refused_as_it_arrives(sides: tuple[Side, Side]) -> None:
    # No Content-Length (chunked): the bytes are counted, not the declared length.
    edge, _ = sides
    chunks = [b'{"query": "{ hello }", "x": "', b"y" * LIMIT, b'"}']
    received: list[bytes] = []

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        received.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await edge.app(_signed_post_scope(), receive, send)
    assert sent[0]["status"] == 413
    assert len(received) == 2  # refused before the rest was read
    assert orjson.loads(sent[1]["body"])["errors"][0]["extensions"]["code"] == ("PAYLOAD_TOO_LARGE")


async def test_a_service_app_answers_post_graphql_through_the_edge() -> None:
    app = kit_http.create_app("doorward-test")
    router = subgraph_router(
        SubgraphSchema(query=Query, extensions=schema_extensions()),
        verifier=TokenVerifier(StaticJwksSource({"keys": []}), NoSessionGuard()),
        services=None,
        gate=GatewayGate(GatewayVerifier.from_file(gateway_keys().public_file)),
    )
    mount_subgraph(app, router)
    assert isinstance(app.post_edges["/graphql"], SubgraphEdge)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://subgraph") as client:
        body = doc({"query": "{ hello }"})
        assert (await client.post("/graphql", content=body, headers=signed(body))).json() == {
            "data": {"hello": "hi"}
        }
        # Everything else still goes through FastAPI.
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/graphql")).status_code == 401  # the router's gate
    # A plain FastAPI app (no edges): the router alone, as before.
    plain = FastAPI()
    mount_subgraph(plain, router)
    transport = httpx.ASGITransport(app=plain)
    async with httpx.AsyncClient(transport=transport, base_url="http://subgraph") as client:
        body = doc({"query": "{ hello }"})
        answer = await client.post("/graphql", content=body, headers=signed(body))
        assert answer.json() == {"data": {"hello": "hi"}}


async def test_a_client_gone_before_its_body_arrived_gets_no_answer(
    sides: tuple[Side, Side], caplog: pytest.LogCaptureFixture
) -> None:
    edge, _ = sides
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await edge.app(_signed_post_scope(), receive, send)
    assert sent == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert [s["name"] for s in edge.spans()] == ["POST /graphql"]  # still traced, and ended
