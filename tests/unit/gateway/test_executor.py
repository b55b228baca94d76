"""Merging, representation building, null propagation and error re-rooting (no network)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateway.executor import Executor, VariablesInvalid, collect_targets, deep_merge
from gateway.planner import QueryPlanner

pytestmark = pytest.mark.unit


def test_deep_merge_objects_and_lists():
    a = {"me": {"id": "1", "reviews": [{"id": "r1"}, {"id": "r2"}]}}
    deep_merge(a, {"me": {"name": "Ada", "reviews": [{"body": "x"}, {"body": "y"}]}})
    assert a == {"me": {"id": "1", "name": "Ada",
                        "reviews": [{"id": "r1", "body": "x"}, {"id": "r2", "body": "y"}]}}


def test_collect_targets_flattens_lists_with_paths():
    data = {"a": [{"b": {"c": 1}}, None, {"b": [{"c": 2}, {"c": 3}]}]}
    assert collect_targets(data, ("a", "b")) == [
        ({"c": 1}, ("a", 0, "b")), ({"c": 2}, ("a", 2, "b", 0)), ({"c": 3}, ("a", 2, "b", 1))]


class FakeSubgraphs:
    """Answers per subgraph with canned bodies and records every request."""

    def __init__(self, answers):
        self.answers = answers
        self.calls: list[tuple[str, dict, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        body = json.loads(request.content)
        self.calls.append((name, body, dict(request.headers)))
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            answer = answer(body)
        return httpx.Response(200, json=answer)


def run(supergraph, query, answers, variables=None, headers=None, timeout=5.0, tracer=None):
    fake = FakeSubgraphs(answers)
    qp = QueryPlanner(supergraph)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            ex = Executor(supergraph.urls, supergraph.api_schema, client, timeout, tracer=tracer)
            return await ex.execute(qp.get(query, None).plan, variables or {}, headers or {})

    return asyncio.run(go()), fake.calls


def test_entities_are_deduplicated_and_merged_back(supergraph):
    def reviews(body):
        return {"data": {"reviews": [
            {"id": "r1", "author": {"__typename": "User", "id": "1"}},
            {"id": "r2", "author": {"__typename": "User", "id": "2"}},
            {"id": "r3", "author": {"__typename": "User", "id": "1"}}]}}

    def accounts(body):
        reps = body["variables"]["r0"]
        return {"data": {"_0": [{"__typename": "User", "name": f"n{r['id']}"} for r in reps]}}

    result, calls = run(supergraph, "{ reviews { id author { name } } }",
                        {"reviews": reviews, "accounts": accounts})
    assert result == {"data": {"reviews": [{"id": "r1", "author": {"name": "n1"}},
                                           {"id": "r2", "author": {"name": "n2"}},
                                           {"id": "r3", "author": {"name": "n1"}}]}}
    assert calls[1][1]["variables"]["r0"] == [{"__typename": "User", "id": "1"},
                                              {"__typename": "User", "id": "2"}]


def test_entity_error_paths_are_rerooted(supergraph):
    answers = {
        "reviews": {"data": {"reviews": [{"author": {"__typename": "User", "id": "1"}},
                                         {"author": {"__typename": "User", "id": "2"}}]}},
        "accounts": {"data": {"_0": [{"name": "a"}, {"name": None}]},
                     "errors": [{"message": "no", "path": ["_0", 1, "name"],
                                 "extensions": {"code": "FORBIDDEN"}}]},
    }
    result, _ = run(supergraph, "{ reviews { author { name } } }", answers)
    # User.name is non-null: the null bubbles to the nullable... author is User! so to Review,
    # then [Review!]! so to the root.
    assert result["data"] is None
    assert result["errors"] == [{"message": "no", "path": ["reviews", 1, "author", "name"],
                                 "extensions": {"code": "FORBIDDEN", "serviceName": "accounts"}}]


def test_missing_non_null_without_errors_goes_to_value_completion(supergraph):
    result, _ = run(supergraph, '{ user(id: "1") { id name } }',
                    {"accounts": {"data": {"user": {"id": "1", "name": None}}}})
    assert result["data"] == {"user": None}
    assert "errors" not in result
    assert result["extensions"]["valueCompletion"][0]["path"] == ["user", "name"]


def test_unreachable_subgraph_nulls_its_fields_with_unavailable(supergraph):
    result, _ = run(supergraph, "{ me { id } topProducts { upc } }",
                    {"accounts": {"data": {"me": {"id": "1"}}},
                     "products": httpx.ConnectError("refused")})
    assert result["data"] is None  # topProducts is non-null: the null reaches the root
    assert result["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    assert result["errors"][0]["path"] == ["topProducts"]
    assert "refused" not in json.dumps(result)


def test_error_without_code_and_stacktrace_is_cleaned(supergraph):
    result, _ = run(supergraph, "{ boom }", {"accounts": {"data": {"boom": None}, "errors": [
        {"message": "x", "path": ["boom"], "extensions": {"stacktrace": ["secret"]}}]}})
    assert result["errors"] == [{"message": "x", "path": ["boom"], "extensions": {
        "code": "DOWNSTREAM_SERVICE_ERROR", "serviceName": "accounts"}}]


def test_authorization_and_traceparent_are_forwarded(supergraph):
    from opentelemetry import context, propagate

    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = context.attach(propagate.extract({"traceparent": tp, "tracestate": "vendor=x"}))
    try:
        _, calls = run(supergraph, "{ me { id } }", {"accounts": {"data": {"me": {"id": "1"}}}},
                       headers={"authorization": "Bearer abc", "cookie": "no"})
    finally:
        context.detach(token)
    headers = calls[0][2]
    assert headers["authorization"] == "Bearer abc"
    assert "cookie" not in headers
    assert headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert headers["tracestate"] == "vendor=x"


def test_variables_are_coerced_and_invalid_ones_rejected(supergraph):
    with pytest.raises(VariablesInvalid):
        run(supergraph, "query($id: ID!) { user(id: $id) { id } }", {}, variables={})
    _, calls = run(supergraph, "query($id: ID!) { user(id: $id) { id } }",
                   {"accounts": {"data": {"user": {"id": "7"}}}}, variables={"id": "7"})
    assert calls[0][1]["variables"] == {"id": "7"}


def test_aliases_and_typename_shape_the_result(supergraph):
    result, _ = run(supergraph, "{ a: me { t: __typename n: name } }",
                    {"accounts": {"data": {"a": {"n": "Ada"}}}})
    assert result == {"data": {"a": {"t": "User", "n": "Ada"}}}


def test_representation_reads_an_aliased_key(supergraph):
    def accounts(body):
        return {"data": {"me": {"id": "Ada", "__typename": "User", "_fk_id": "1"}}}

    def reviews(body):
        assert body["variables"]["r0"] == [{"__typename": "User", "id": "1"}]
        return {"data": {"_0": [{"__typename": "User", "reviews": [{"id": "r1"}]}]}}

    result, _ = run(supergraph, "{ me { id: name reviews { id } } }",
                    {"accounts": accounts, "reviews": reviews})
    assert result == {"data": {"me": {"id": "Ada", "reviews": [{"id": "r1"}]}}}


def test_multi_hop_execution_merges_each_hop():
    from gateway.composition import Supergraph, compose

    link = ('extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", '
            'import: ["@key"])\n')
    sg = Supergraph.from_sdl(compose({
        "a": ("http://a.test", link + 'type Query { t: [T] } type T @key(fields: "id") '
              '{ id: ID! }'),
        "b": ("http://b.test", link + 'type T @key(fields: "id") @key(fields: "sku") '
              '{ id: ID! sku: String! } type Query { b: Int }'),
        "c": ("http://c.test", link + 'type T @key(fields: "sku") { sku: String! extra: Int } '
              'type Query { c: Int }'),
    }))
    answers = {
        "a": {"data": {"t": [{"__typename": "T", "id": "1"}, {"__typename": "T", "id": "2"}]}},
        "b": lambda body: {"data": {"_0": [{"__typename": "T", "sku": f"s{r['id']}"}
                                           for r in body["variables"]["r0"]]}},
        "c": lambda body: {"data": {"_0": [{"__typename": "T", "extra": len(r["sku"])}
                                           for r in body["variables"]["r0"]]}},
    }
    result, calls = run(sg, "{ t { id extra } }", answers)
    assert result == {"data": {"t": [{"id": "1", "extra": 2}, {"id": "2", "extra": 2}]}}
    assert [c[0] for c in calls] == ["a", "b", "c"]
    assert calls[2][1]["variables"]["r0"] == [{"__typename": "T", "sku": "s1"},
                                              {"__typename": "T", "sku": "s2"}]


def test_entity_subgraph_timeout_nulls_only_its_fields(supergraph):
    answers = {
        "accounts": {"data": {"me": {"name": "Ada", "__typename": "User", "id": "1"}}},
        "reviews": httpx.ReadTimeout("slow"),
    }
    result, _ = run(supergraph, "{ me { name reviews { id } } }", answers)
    # reviews is [Review!]!: its null reaches `me`, which is nullable.
    assert result["data"] == {"me": None}
    assert result["errors"] == [{"message": 'Subgraph "reviews" is unavailable.',
                                 "path": ["me", "reviews"],
                                 "extensions": {"code": "UNAVAILABLE", "serviceName": "reviews"}}]


def test_invalid_leaf_values_never_reach_the_client(supergraph):
    result, _ = run(supergraph, '{ product(upc: "p1") { upc category price } }',
                    {"products": {"data": {"product": {"upc": "p1", "category": "SECRET",
                                                       "price": "ten"}}}})
    # category and price are non-null: the product becomes null, with no extra null error.
    assert result["data"] == {"product": None}
    paths = [e["path"] for e in result["extensions"]["valueCompletion"]]
    assert paths == [["product", "category"], ["product", "price"]]


def test_one_span_per_subgraph_fetch_and_it_is_the_forwarded_parent(supergraph):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    answers = {"accounts": {"data": {"me": {"__typename": "User", "id": "1"}}},
               "reviews": {"data": {"_0": [{"__typename": "User", "reviews": []}]}}}
    _, calls = run(supergraph, "{ me { reviews { id } } }", answers,
                   tracer=provider.get_tracer("test"))
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["gateway.fetch accounts", "gateway.fetch reviews"]
    for span, call in zip(spans, calls, strict=True):
        assert call[2]["traceparent"].split("-")[2] == format(span.context.span_id, "016x")


def test_condition_node_skips_the_fetch_when_false(supergraph):
    q = "query($x: Boolean!) { me @include(if: $x) { name } }"
    answers = {"accounts": {"data": {"me": {"name": "Ada"}}}}
    result, calls = run(supergraph, q, answers, variables={"x": False})
    assert result == {"data": {}} and calls == []
    result, calls = run(supergraph, q, answers, variables={"x": True})
    assert result == {"data": {"me": {"name": "Ada"}}} and len(calls) == 1


def test_null_key_is_not_sent_to_entities(supergraph):
    answers = {
        "accounts": {"data": {"users": [{"__typename": "User", "id": "1", "name": "A"},
                                        {"__typename": "User", "id": None, "name": "B"}]}},
        "reviews": lambda body: {"data": {"_0": [{"__typename": "User", "reviews": []}
                                                 for _ in body["variables"]["r0"]]}},
    }
    _, calls = run(supergraph, "{ users { name reviews { id } } }", answers)
    assert calls[1][1]["variables"]["r0"] == [{"__typename": "User", "id": "1"}]
