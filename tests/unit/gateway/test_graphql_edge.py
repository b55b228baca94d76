"""POST /graphql is answered by one pure ASGI layer (gateway/server.py GraphQLEdge) instead of
FastAPI's middleware stack: its answers must carry exactly the headers the stack gives every
other answer (security headers, no-store, CORS), for listed and unlisted origins alike, and keep
the body limit, the JSON refusals and the answer while the gateway is starting."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from doorward_kit.settings import StackSettings
from gateway.server import create_app
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

CONSOLE = "https://doorward.example.com"


def client(supergraph_sdl: str, tmp_path: Path, **extra: object) -> TestClient:
    stack = StackSettings(gateway_public_url=CONSOLE, secrets_public_url="https://s.example.com")
    settings = GatewaySettings(stack=stack, auth_enabled=False, console_dir=str(tmp_path),
                               **extra)  # type: ignore[arg-type]
    return TestClient(create_app(settings, supergraph_sdl=supergraph_sdl))


def comparable(headers: object) -> list[tuple[str, str]]:
    """The headers an answer carries, in any order, without its own length and date."""
    items = headers.multi_items()  # type: ignore[attr-defined]
    return sorted((k.lower(), v) for k, v in items
                  if k.lower() not in ("content-length", "date", "server"))


@pytest.mark.parametrize("origin", [None, CONSOLE, "https://evil.example.net"])
def test_the_edge_answers_with_the_headers_of_the_middleware_stack(
    supergraph_sdl: str, tmp_path: Path, origin: str | None
) -> None:
    headers = {"origin": origin} if origin else {}
    with client(supergraph_sdl, tmp_path) as c:
        edge = c.post("/graphql", content=b"not json", headers=headers)  # the edge
        stack = c.get("/graphql", headers=headers)  # FastAPI and its middleware
    assert edge.status_code == stack.status_code == 400
    assert edge.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert comparable(edge.headers) == comparable(stack.headers)
    assert edge.headers["cache-control"] == "no-store"
    assert edge.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in edge.headers["content-security-policy"]
    # CORS: the listed origin is echoed, any other is not (both sides).
    assert edge.headers.get("access-control-allow-origin") == (
        CONSOLE if origin == CONSOLE else None)


def test_an_honest_query_is_answered_through_the_edge(supergraph_sdl: str, tmp_path: Path
                                                       ) -> None:
    with client(supergraph_sdl, tmp_path) as c:
        answer = c.post("/graphql", json={"query": "{ __typename }"})
    assert answer.status_code == 200
    assert answer.json() == {"data": {"__typename": "Query"}}
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"


def test_the_body_limit_holds_at_the_edge(supergraph_sdl: str, tmp_path: Path) -> None:
    with client(supergraph_sdl, tmp_path, max_body_bytes=100) as c:
        big = c.post("/graphql", content=b"{" + b" " * 200 + b"}")
        small = c.post("/graphql", json={"query": "{ __typename }"})
    assert big.status_code == 413
    assert big.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert small.status_code == 200


def test_a_batch_goes_through_the_edge(supergraph_sdl: str, tmp_path: Path) -> None:
    with client(supergraph_sdl, tmp_path) as c:
        answer = c.post("/graphql", json=[{"query": "{ __typename }"}] * 2)
        empty = c.post("/graphql", json=[])
    assert answer.json() == [{"data": {"__typename": "Query"}}] * 2
    assert empty.status_code == 400


def test_before_the_gateway_has_started_the_edge_says_so(supergraph_sdl: str, tmp_path: Path
                                                          ) -> None:
    c = client(supergraph_sdl, tmp_path)  # no `with`: the lifespan has not run
    answer = c.post("/graphql", json={"query": "{ __typename }"})
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert answer.headers["cache-control"] == "no-store"


def test_a_preflight_still_goes_through_the_cors_middleware(supergraph_sdl: str, tmp_path: Path
                                                            ) -> None:
    with client(supergraph_sdl, tmp_path) as c:
        ok = c.options("/graphql", headers={"origin": CONSOLE,
                                            "access-control-request-method": "POST"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == CONSOLE
