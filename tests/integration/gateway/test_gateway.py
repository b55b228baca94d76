"""Queries through the gateway over real HTTP against three strawberry subgraphs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import httpx
import pytest

from gateway.server import GatewayStartupError, fetch_sdls
from tests.integration.gateway.conftest import gateway_settings, start_gateway

pytestmark = pytest.mark.integration


def ok(resp: httpx.Response) -> dict:
    body = resp.json()
    assert resp.status_code == 200, body
    assert "errors" not in body, body
    return body["data"]


def test_root_fields_from_three_subgraphs(gateway):
    data = ok(gateway.post("{ me { id name } topProducts(first: 2) { upc name } "
                           "reviews { id } }"))
    assert data["me"] == {"id": "1", "name": "Ada"}
    assert [p["upc"] for p in data["topProducts"]] == ["p1", "p2"]
    assert len(data["reviews"]) == 4


def test_entity_jumps_nested_a_b_a_with_requires_and_provides(gateway):
    data = ok(gateway.post("""{ me { name reviews { body author { username name }
        product { name price shippingEstimate reviews { stars author { name } } } } } }"""))
    first = data["me"]["reviews"][0]
    assert first["author"] == {"username": "ada", "name": "Ada"}
    assert first["product"]["shippingEstimate"] == 6  # price 10 <= 15: weight 3 * 2
    assert [r["author"]["name"] for r in first["product"]["reviews"]] == ["Ada", "Alan"]


def test_compound_key_jump_and_shareable(gateway):
    data = ok(gateway.post("{ topProducts { upc name reviews { id product { upc name } } } }"))
    hammer = data["topProducts"][0]
    assert hammer["reviews"][0]["product"] == {"upc": "p1", "name": "Hammer"}


def test_aliases_variables_fragments_and_typename(gateway):
    q = """query Q($first: Int!, $cat: Category) {
      cheap: topProducts(first: $first, filter: {category: $cat, maxPrice: 15}) { ...P t: __typename }
    } fragment P on Product { id: upc label: name }"""
    data = ok(gateway.post(q, {"first": 5, "cat": "TOOLS"}))
    assert data == {"cheap": [{"id": "p1", "label": "Hammer", "t": "Product"}]}


def test_include_and_skip(gateway):
    q = """query($yes: Boolean!, $no: Boolean!) { me { name @include(if: $no)
      id @skip(if: $no) ... @include(if: $yes) { reviews { id } } } }"""
    data = ok(gateway.post(q, {"yes": True, "no": False}))
    assert data == {"me": {"id": "1", "reviews": [{"id": "r1"}, {"id": "r3"}]}}
    data = ok(gateway.post(q, {"yes": False, "no": True}))
    assert data == {"me": {"name": "Ada"}}


def test_interfaces_and_unions_with_type_conditions(gateway):
    data = ok(gateway.post("""{ media { __typename id title ... on Book { pages }
        ... on Movie { minutes } }
      search(term: "") { ... on Product { name reviews { stars } } ... on Book { title } }
      accounts { name ... on User { reviews { id } } ... on Bot { owner { name } } } }"""))
    assert data["media"] == [{"__typename": "Book", "id": "m1", "title": "Dune", "pages": 412},
                             {"__typename": "Movie", "id": "m2", "title": "Alien",
                              "minutes": 117}]
    assert data["search"][0] == {"name": "Hammer", "reviews": [{"stars": 5}, {"stars": 2}]}
    assert data["search"][-1] == {"title": "Dune"}
    assert data["accounts"] == [{"name": "Ada", "reviews": [{"id": "r1"}, {"id": "r3"}]},
                                {"name": "Robo", "owner": {"name": "Ada"}}]


def test_subgraph_errors_keep_code_and_are_rerooted(gateway):
    body = gateway.post("{ boom reviews { id flaky author { nickname } } }").json()
    assert body["data"]["boom"] is None
    assert body["data"]["reviews"][1]["flaky"] is None
    assert body["data"]["reviews"][3]["author"]["nickname"] is None
    errs = {tuple(e["path"]): e["extensions"]["code"] for e in body["errors"]}
    assert errs == {("boom",): "FORBIDDEN", ("reviews", 1, "flaky"): "CONFLICT",
                    ("reviews", 3, "author", "nickname"): "FORBIDDEN"}


def test_error_without_code_gets_downstream_code(gateway):
    body = gateway.post("{ plainError }").json()
    assert body["errors"][0]["extensions"]["code"] == "DOWNSTREAM_SERVICE_ERROR"
    assert body["errors"][0]["path"] == ["plainError"]


def test_null_propagation_to_nearest_nullable(gateway):
    body = gateway.post("{ brokenUser { id name } me { id } }").json()
    assert body["data"] == {"brokenUser": None, "me": {"id": "1"}}
    body = gateway.post("{ me { id } topProducts { reviews { strictBody } } }").json()
    # r4's strictBody is null: Review -> [Review!]! -> Product -> [Product!]! -> Query.
    assert body["data"] is None
    assert body["errors"][0]["path"] == ["topProducts", 2, "reviews", 0, "strictBody"]
    body = gateway.post('{ review(id: "r4") { id strictBody } }').json()
    assert body["data"] == {"review": None}


def test_slow_subgraph_is_unavailable_not_a_hang(gateway):
    started = time.monotonic()
    body = gateway.post("{ slow(ms: 4000) me { name } }").json()
    assert time.monotonic() - started < 3
    assert body["data"] == {"slow": None, "me": {"name": "Ada"}}
    assert body["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert body["errors"][0]["path"] == ["slow"]


def test_authorization_is_forwarded_and_a_client_traceparent_is_not(gateway):
    # The edge starts the trace (a client's traceparent is only a span link, see
    # tests/security/test_edge_http.py): the client's trace id never reaches a subgraph.
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    data = ok(gateway.post("{ whoami traceHeader }",
                           headers={"Authorization": "Bearer abc", "traceparent": tp}))
    assert data["whoami"] == "Bearer abc"
    assert "0af7651916cd43dd8448eb211c80319c" not in (data["traceHeader"] or "")


@pytest.mark.parametrize("query", [
    '{ _entities(representations: [{__typename: "User", id: "1"}]) { __typename } }',
    "{ _service { sdl } }",
    "{ secretCount }",
    "{ me { internalNote } }",
])
def test_federation_internals_and_inaccessible_are_not_exposed(gateway, query):
    resp = gateway.post(query)
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_mutations_run_in_order(gateway):
    data = ok(gateway.post("""mutation { a: rename(id: "2", name: "Al") { name }
      b: setPrice(upc: "p2", price: 4) { price }
      c: rename(id: "2", name: "Alan") { name reviews { body } }
      d: addReview(upc: "p1", body: "new") { id product { name } } }"""))
    assert data["a"] == {"name": "Al"}
    assert data["c"] == {"name": "Alan", "reviews": [{"body": "Meh"}]}
    assert data["d"] == {"id": "new", "product": {"name": "Hammer"}}
    ok(gateway.post('mutation { setPrice(upc: "p2", price: 3) { price } }'))


def test_parse_and_variable_errors(gateway):
    resp = gateway.post("{ me { ")
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    resp = gateway.post("query($id: ID!) { user(id: $id) { name } }", {})
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_get_queries_work_and_get_mutations_do_not(gateway):
    r = httpx.get(gateway.url, params={"query": "{ me { name } }"})
    assert r.json() == {"data": {"me": {"name": "Ada"}}}
    r = httpx.get(gateway.url, params={"query": 'mutation { login(username: "x") }'})
    assert r.status_code == 405


def test_batched_operations(gateway):
    r = httpx.post(gateway.url, json=[{"query": "{ me { id } }"}, {"query": "{ reviews { id } }"}])
    assert r.json()[0]["data"] == {"me": {"id": "1"}}
    too_many = [{"query": "{ me { id } }"}] * 11
    assert httpx.post(gateway.url, json=too_many).status_code == 400


def test_limits(gateway):
    deep = "{ me { " + "reviews { product { " * 8 + "name" + " } }" * 8 + " } }"
    r = gateway.post(deep)
    assert r.status_code == 400 and "levels deep" in r.json()["errors"][0]["message"]
    aliases = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(40)) + " }"
    assert gateway.post(aliases).status_code == 400
    big = "{ me { id } }" + " " * 1_100_000
    assert httpx.post(gateway.url, content=json.dumps({"query": big}),
                      headers={"content-type": "application/json"}).status_code == 413


def test_introspection_and_graphiql_in_development(gateway):
    data = ok(gateway.post('{ __schema { queryType { name } } '
                           '__type(name: "User") { fields { name } } }'))
    names = {f["name"] for f in data["__type"]["fields"]}
    assert "internalNote" not in names and "reviews" in names
    html = httpx.get(gateway.url, headers={"accept": "text/html"})
    assert "GraphiQL" in html.text


def test_production_gateway_hides_introspection_and_rate_limits(subgraphs):
    gw = start_gateway(gateway_settings(subgraphs.urls, env="production",
                                        rate_limit_per_second=0.001, rate_limit_burst=3))
    try:
        r = gw.post("{ __schema { types { name } } }")
        assert r.status_code == 400
        assert httpx.get(gw.url, headers={"accept": "text/html"}).status_code == 400
        codes = [gw.post("{ me { id } }").status_code for _ in range(4)]
        assert codes[-1] == 429
        assert gw.post("{ me { id } }").json()["errors"][0]["extensions"]["code"] == \
            "RATE_LIMITED"
    finally:
        gw.stop()


def test_trusted_documents_mode(subgraphs, tmp_path):
    doc = "{ me { name } }"
    sha = hashlib.sha256(doc.encode()).hexdigest()
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps({sha: doc}))
    gw = start_gateway(gateway_settings(subgraphs.urls, trusted_documents=str(path)))
    try:
        r = httpx.post(gw.url, json={"extensions": {"persistedQuery": {"version": 1,
                                                                        "sha256Hash": sha}}})
        assert r.json() == {"data": {"me": {"name": "Ada"}}}
        assert gw.post(doc).json() == {"data": {"me": {"name": "Ada"}}}
        r = gw.post("{ me { id } }")
        assert r.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    finally:
        gw.stop()


class FakePrincipal:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id


async def fake_authenticator(authorization: str | None) -> object:
    if authorization != "Bearer good":
        raise PermissionError("bad token")
    return FakePrincipal("u1")


def test_authentication(subgraphs):
    gw = start_gateway(gateway_settings(subgraphs.urls, auth_enabled=True),
                       authenticator=fake_authenticator)
    try:
        r = gw.post("{ me { id } }")
        assert r.status_code == 401
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert gw.post("{ me { id } }", headers={"Authorization": "Bearer bad"}).status_code == 401
        assert ok(gw.post("{ me { id } }", headers={"Authorization": "Bearer good"}))
        assert ok(gw.post('mutation { login(username: "ada") }')) == {"login": "token-for-ada"}
        assert ok(gw.post('mutation R { refresh(token: "t") }'))
        r = gw.post('mutation { login(username: "ada") rename(id: "1", name: "Ada") { id } }')
        assert r.status_code == 401
    finally:
        gw.stop()


def test_gateway_starts_from_supergraph_file(subgraphs):
    from gateway.composition import compose

    sdl = compose(subgraphs.sdls())
    gw = start_gateway(gateway_settings({}), supergraph_sdl=sdl)
    try:
        assert ok(gw.post("{ me { reviews { id } } }")) == {"me": {"reviews": [{"id": "r1"},
                                                                               {"id": "r3"}]}}
    finally:
        gw.stop()


async def test_startup_names_the_subgraph_that_is_down(subgraphs):
    from doorward_kit.net import free_port

    dead = free_port()  # nobody listens there
    urls = dict(subgraphs.urls)
    urls["audit"] = f"http://127.0.0.1:{dead}/graphql"
    async with httpx.AsyncClient() as client:
        with pytest.raises(GatewayStartupError, match=rf"audit at http://127\.0\.0\.1:{dead}/"):
            await asyncio.wait_for(fetch_sdls(client, urls, wait=0.5), 10)


def test_authentication_with_doorward_tokens(subgraphs):
    from gateway.auth import authenticator_from_verifier
    from tests.fixtures.tokens import TestTokenIssuer

    issuer = TestTokenIssuer()
    gw = start_gateway(gateway_settings(subgraphs.urls, auth_enabled=True),
                       authenticator=authenticator_from_verifier(issuer.verifier()))
    try:
        good = issuer.token(user_id="u1")
        assert ok(gw.post("{ whoami }", headers={"Authorization": f"Bearer {good}"})) == \
            {"whoami": f"Bearer {good}"}
        restricted = issuer.token(scope="restricted")
        assert gw.post("{ me { id } }",
                       headers={"Authorization": f"Bearer {restricted}"}).status_code == 200
        expired = issuer.token(lifetime=-60)
        r = gw.post("{ me { id } }", headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert expired not in r.text
        other = TestTokenIssuer(kid="other").token()
        assert gw.post("{ me { id } }",
                       headers={"Authorization": f"Bearer {other}"}).status_code == 401
    finally:
        gw.stop()
