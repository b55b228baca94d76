"""Issue 10, finding 1 and cost of finding 7: nobody can freeze the gateway with a small request.

The real gateway app (authentication on, production settings) serves the Doorward supergraph
over real HTTP; identity is a stand-in that answers `login`, so an honest login runs end to end.
Each attack is a request of at most 4 KB; before the fix the fragment bombs held the event loop
for minutes (the limits walk re-expanded every spread), and several others were validated at
length and then run. Each must now be refused at once, and the honest request still works.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from doorward_kit.net import free_port
from gateway.auth import authenticator_from_verifier
from tests.fixtures.asgi import fixed_json_app
from tests.fixtures.tokens import TestTokenIssuer
from tests.integration.gateway.conftest import RunningGateway, gateway_settings, start_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = 2.0  # seconds; generous on a busy machine, the bench measures the real figure
LOGIN = 'login(email: "a@example.com", password: "x")'
HONEST = (
    "mutation Login($email: String!, $password: String!) { login(email: $email, "
    "password: $password) { accessToken refreshToken expiresAt passwordChangeRequired "
    "mfaEnrollmentRequired user { id displayName roles regions { id name } } } }"
)
HONEST_VARS = {"email": "ada@example.com", "password": "correct horse"}
AUTH_PAYLOAD = {
    "accessToken": "access",
    "refreshToken": "refresh",
    "expiresAt": "2030-01-01T00:00:00+00:00",
    "passwordChangeRequired": False,
    "mfaEnrollmentRequired": False,
    "user": {
        "id": "u1",
        "displayName": "Ada",
        "roles": ["TECHNICIAN"],
        "regions": [{"id": "r1", "name": "North"}],
    },
}


# ---------------------------------------------------------------------------------------------
# The gateway under test


def _identity_stub() -> tuple[uvicorn.Server, threading.Thread, str]:
    """Answers every operation with one AuthPayload (what identity's `login` returns)."""
    answer = json.dumps({"data": {"login": AUTH_PAYLOAD}}).encode()

    app = fixed_json_app(answer)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True, name="identity-stub")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("identity stub did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}/graphql"


def doorward_supergraph(identity_url: str) -> str:
    from gateway.composition import compose
    from services.audit.api.graphql import build_schema as audit_schema
    from services.identity.api.graphql import build_schema as identity_schema
    from services.workorders.api.graphql import build_schema as workorders_schema

    unused = "http://127.0.0.1:9/graphql"  # nothing here reaches workorders or audit
    sdls = {}
    for name, build, url in (
        ("identity", identity_schema, identity_url),
        ("workorders", workorders_schema, unused),
        ("audit", audit_schema, unused),
    ):
        result = build().execute_sync("{ _service { sdl } }")
        assert result.data is not None, result.errors
        sdls[name] = (url, result.data["_service"]["sdl"])
    return compose(sdls)


class Edge:
    def __init__(self, gateway: RunningGateway, issuer: TestTokenIssuer) -> None:
        self.gateway = gateway
        self.issuer = issuer
        self.token = issuer.token(user_id="u1")

    def post(self, body: Any, *, signed_in: bool = False) -> tuple[httpx.Response, float]:
        headers = {"content-type": "application/json"}
        if signed_in:
            headers["authorization"] = f"Bearer {self.token}"
        raw = json.dumps(body).encode()
        assert len(raw) <= 4096, len(raw)
        started = time.monotonic()
        r = httpx.post(self.gateway.url, content=raw, headers=headers, timeout=30)
        return r, time.monotonic() - started


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    server, thread, identity_url = _identity_stub()
    issuer = TestTokenIssuer()
    try:
        settings = gateway_settings(
            {}, env="production", auth_enabled=True, rate_limit_per_second=0
        )
        gw = start_gateway(
            settings,
            authenticator=authenticator_from_verifier(issuer.verifier()),
            supergraph_sdl=doorward_supergraph(identity_url),
        )
        try:
            yield Edge(gw, issuer)
        finally:
            gw.stop()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def codes(body: Any) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors") or ()]


# ---------------------------------------------------------------------------------------------
# The bombs (each at most 4 KB)


def fit(make: Any, lo: int = 1, hi: int = 4000) -> str:
    """make(n) for the largest n whose request body still fits in 4 KB."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(json.dumps({"query": make(mid)})) <= 4096:
            lo = mid
        else:
            hi = mid - 1
    return str(make(lo))


def fragment_bomb(levels: int, on: str = "AuthPayload", leaf: str = "accessToken") -> str:
    frags = [f"fragment F0 on {on} {{ {leaf} }}"]
    frags += [f"fragment F{i} on {on} {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return " ".join(frags)


def anonymous_bombs() -> dict[str, str]:
    login = f"mutation {{ {LOGIN} {{ "
    return {
        "fragments": f"{login}...F20 }} }} " + fragment_bomb(20),
        "aliases": fit(
            lambda n: (
                "mutation { "
                + " ".join(f"a{i}: {LOGIN} {{ accessToken }}" for i in range(n))
                + " }"
            )
        ),
        "field merges": fit(lambda n: login + "accessToken " * n + "} }"),
        "directives": fit(lambda n: login + "accessToken " + "@skip(if: false) " * n + "} }"),
        "unknown directives": fit(lambda n: login + "accessToken " + "@x " * n + "} }"),
        "variables": fit(
            lambda n: (
                "mutation ("
                + " ".join(f"$v{i}: Int" for i in range(n))
                + f") {{ {LOGIN} {{ accessToken }} }}"
            )
        ),
        "tokens": fit(lambda n: login + "__typename " * n + "} }"),
        "inline nesting": fit(
            lambda n: login + "... on AuthPayload { " * n + "accessToken" + " }" * n + " } }"
        ),
        "fragment chain": fit(
            lambda n: (
                f"{login}...C{n - 1} }} }} "
                + " ".join(
                    ["fragment C0 on AuthPayload { accessToken }"]
                    + [f"fragment C{i} on AuthPayload {{ ...C{i - 1} }}" for i in range(1, n)]
                )
            )
        ),
    }


# ---------------------------------------------------------------------------------------------
# Anonymous: only login/refresh run, inside a small token budget


def test_an_honest_anonymous_login_still_works(edge: Edge) -> None:
    r, _ = edge.post({"query": HONEST, "variables": HONEST_VARS})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["login"] == AUTH_PAYLOAD


@pytest.mark.parametrize("name", sorted(anonymous_bombs()))
def test_anonymous_bombs_are_refused_while_parsing(edge: Edge, name: str) -> None:
    # Before: parsed whole, then validated or expanded (the fragment bomb never returned, the
    # field-merge, token, chain and nesting bombs were even run). Now parsing stops at the
    # budget of a request without a token.
    r, took = edge.post({"query": anonymous_bombs()[name]})
    assert took < FAST
    assert r.status_code == 400, r.text[:300]
    assert codes(r.json()) == ["GRAPHQL_PARSE_FAILED"]
    assert "more than 200 tokens" in r.json()["errors"][0]["message"]


def test_a_batch_shares_one_token_budget(edge: Edge) -> None:
    bomb = f"mutation {{ {LOGIN} {{ " + "accessToken " * 20 + "} }"  # ~35 tokens each
    r, took = edge.post([{"query": bomb}] * 10)
    assert took < FAST
    assert r.status_code == 200
    for item in r.json():
        assert codes(item) == ["GRAPHQL_PARSE_FAILED"]
        assert "more than 20 tokens" in item["errors"][0]["message"]
    # Honest side: two logins in one batch fit (100 tokens each).
    r, _ = edge.post([{"query": HONEST, "variables": HONEST_VARS}] * 2)
    assert [item["data"]["login"]["accessToken"] for item in r.json()] == ["access"] * 2


def test_an_expired_token_still_gets_401_for_a_long_document(edge: Edge) -> None:
    # The small budget is for strangers; a client whose token expired must see 401 (and
    # refresh), not a parse error about a budget it never had.
    expired = edge.issuer.token(user_id="u1", lifetime=-60)
    query = "{ me { " + "id " * 300 + "} }"
    r = httpx.post(
        edge.gateway.url,
        json={"query": query},
        headers={"authorization": f"Bearer {expired}"},
        timeout=30,
    )
    assert r.status_code == 401
    assert codes(r.json()) == ["UNAUTHENTICATED"]


def test_an_anonymous_query_that_is_not_a_login_is_refused(edge: Edge) -> None:
    r, took = edge.post({"query": "{ me { " + "id " * 1000 + "} }"})
    assert took < FAST
    assert r.status_code in (400, 401)
    r, _ = edge.post({"query": "{ me { id } }"})
    assert r.status_code == 401


# ---------------------------------------------------------------------------------------------
# Signed in: the one-pass limits, before validation and planning


def test_a_fragment_bomb_is_refused_at_once_even_with_a_token(edge: Edge) -> None:
    # 40 levels: 2^40 fields once expanded. Before: the walk expanded them (hours).
    query = "{ me { ...F40 } } " + fragment_bomb(40, on="User", leaf="id")
    r, took = edge.post({"query": query}, signed_in=True)
    assert took < FAST
    assert r.status_code == 400
    assert codes(r.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    r, _ = edge.post(
        {"query": "{ me { ...F1 } } " + fragment_bomb(1, "User", "id")}, signed_in=True
    )
    assert r.status_code == 200  # a fragment spread twice is fine


def test_repeated_fields_are_refused_before_validation(edge: Edge) -> None:
    # Before: 450 copies of `id` passed the limits (under 500 fields), validation compared
    # ~100,000 pairs of them, then it ran.
    query = "{ me { " + "id " * 450 + "} }"
    r, took = edge.post({"query": query}, signed_in=True)
    assert took < FAST
    assert r.status_code == 400
    assert "merge into one response key" in r.json()["errors"][0]["message"]
    r, _ = edge.post({"query": "{ me { id id displayName } }"}, signed_in=True)
    assert r.status_code == 200


def test_directives_are_counted(edge: Edge) -> None:
    # Before: not counted at all; this valid document ran.
    query = "{ me { ...D } } fragment D on User { " + "id @include(if: true) " * 55 + "}"
    r, took = edge.post({"query": query}, signed_in=True)
    assert took < FAST
    assert r.status_code == 400
    assert "directives" in r.json()["errors"][0]["message"]
    r, _ = edge.post({"query": "{ me { id @include(if: true) } }"}, signed_in=True)
    assert r.status_code == 200


def test_a_fragment_cycle_is_refused_by_the_walk(edge: Edge) -> None:
    query = "{ me { ...A } } fragment A on User { id ...B } fragment B on User { ...A }"
    r, took = edge.post({"query": query}, signed_in=True)
    assert took < FAST
    assert r.status_code == 400
    assert codes(r.json()) == ["GRAPHQL_VALIDATION_FAILED"]


def test_deep_nesting_is_refused(edge: Edge) -> None:
    # 4 KB of nesting: refused by the first limit the walk passes (cost or depth), never a
    # recursion error; selections nested past the parser's own limit are a parse error.
    deep = fit(
        lambda n: "{ me { " + "assignedWorkOrders { assignee { " * n + "id" + " } }" * n + " } }"
    )
    r, took = edge.post({"query": deep}, signed_in=True)
    assert took < FAST
    assert r.status_code == 400
    assert codes(r.json())[0] in ("GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED")
    inline = "{ me { " + "... on User { " * 100 + "id" + " }" * 100 + " } }"
    r, took = edge.post({"query": inline}, signed_in=True)
    assert took < FAST
    assert r.status_code == 400
    assert "nests selections" in r.json()["errors"][0]["message"]
    r, _ = edge.post({"query": "{ me { assignedWorkOrders { assignee { id } } } }"}, signed_in=True)
    assert r.status_code == 200


# ---------------------------------------------------------------------------------------------
# Cost honours first/last (the contract: first defaults to 50, capped at 200)

# workOrders(first: N) costs N x 233 here: the connection's edges are its N items, and each
# order's auditTrail (a list without first: 10) holds a workOrder with its own auditTrail.
COSTLY = (
    "query Orders($n: Int) { workOrders(first: $n) { edges { node { auditTrail { id "
    "workOrder { auditTrail { id } } } } } } }"
)


def _cost_refused(r: httpx.Response) -> bool:
    return r.status_code == 400 and "cost" in r.json()["errors"][0]["message"]


def test_cost_counts_first_literal(edge: Edge) -> None:
    small = COSTLY.replace("query Orders($n: Int)", "query").replace("$n", "5")
    r, _ = edge.post({"query": small}, signed_in=True)
    assert r.status_code == 200 and "GRAPHQL_VALIDATION_FAILED" not in codes(r.json())
    # Before: `first` on a connection was ignored, so 200 cost the same as 5.
    r, _ = edge.post({"query": small.replace("first: 5", "first: 200")}, signed_in=True)
    assert _cost_refused(r), r.text
    # Absent, `first` is 50 (50 x 233 > 10,000).
    r, _ = edge.post({"query": small.replace("(first: 5)", "")}, signed_in=True)
    assert _cost_refused(r), r.text


def test_cost_counts_first_from_variables(edge: Edge) -> None:
    r, _ = edge.post({"query": COSTLY, "variables": {"n": 200}}, signed_in=True)
    assert _cost_refused(r), r.text
    r, _ = edge.post({"query": COSTLY, "variables": {"n": 5}}, signed_in=True)
    assert r.status_code == 200 and "GRAPHQL_VALIDATION_FAILED" not in codes(r.json())
    # The same document again (cached plan): the cost is still checked with these variables.
    r, _ = edge.post({"query": COSTLY, "variables": {"n": 10_000}}, signed_in=True)
    assert _cost_refused(r), r.text
