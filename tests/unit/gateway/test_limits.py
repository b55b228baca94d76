"""Operation limits, trusted documents, rate limiting and the public-operation rule."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from graphql import parse

from gateway.limits import LimitExceeded, Limits, RateLimiter, TrustedDocuments, check_document
from gateway.server import is_public_operation

pytestmark = pytest.mark.unit


def check(supergraph, query: str, **kw) -> None:
    check_document(supergraph.api_schema, parse(query), Limits(**kw))


def test_depth(supergraph):
    check(supergraph, "{ me { reviews { id } } }", max_depth=3)
    with pytest.raises(LimitExceeded, match="3 levels deep"):
        check(supergraph, "{ me { reviews { id } } }", max_depth=2)


def test_depth_counts_through_fragments(supergraph):
    q = "{ me { ...A } } fragment A on User { reviews { product { name } } }"
    with pytest.raises(LimitExceeded, match="4 levels deep"):
        check(supergraph, q, max_depth=3)


def test_aliases_and_fields(supergraph):
    with pytest.raises(LimitExceeded, match="aliases"):
        check(supergraph, "{ a: me { id } b: me { id } }", max_aliases=1)
    with pytest.raises(LimitExceeded, match="fields"):
        check(supergraph, "{ me { id name username } }", max_fields=3)


def test_cost_multiplies_list_sizes(supergraph):
    # topProducts (first: 100) x reviews (default 10) x author
    q = "{ topProducts(first: 100) { reviews { author { name } } } }"
    with pytest.raises(LimitExceeded, match="cost"):
        check(supergraph, q, max_cost=1000)
    check(supergraph, q, max_cost=100_000)


def test_introspection_only_when_enabled(supergraph):
    with pytest.raises(LimitExceeded, match="introspection"):
        check(supergraph, "{ __schema { types { name } } }")
    check(supergraph, "{ __schema { types { name } } }", introspection=True)
    check(supergraph, "{ __typename }")  # not introspection of the schema


def test_trusted_documents(tmp_path):
    doc = "{ me { id } }"
    sha = hashlib.sha256(doc.encode()).hexdigest()
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"format": "apollo-persisted-query-manifest", "version": 1,
                                "operations": [{"id": sha, "body": doc, "name": "Me",
                                                "type": "query"}]}))
    trusted = TrustedDocuments.load(path)
    assert trusted.resolve(None, sha) == doc
    assert trusted.resolve(doc, None) == doc
    assert trusted.resolve("{ me { name } }", None) is None
    assert trusted.resolve("{ me { name } }", sha) is None
    path.write_text(json.dumps({"0" * 64: doc}))
    with pytest.raises(ValueError, match="does not match"):
        TrustedDocuments.load(path)


def test_rate_limiter_token_bucket():
    rl = RateLimiter(rate=1.0, burst=2)
    assert rl.allow("u", now=0.0) and rl.allow("u", now=0.0)
    assert not rl.allow("u", now=0.0)
    assert rl.allow("other", now=0.0)
    assert rl.allow("u", now=1.0)
    assert RateLimiter(rate=0, burst=0).allow("x")


@pytest.mark.parametrize(("query", "public"), [
    ('mutation { login(username: "a") }', True),
    ('mutation { refresh(token: "t") }', True),
    ('mutation { login(username: "a") rename(id: "1", name: "x") { id } }', False),
    ("{ me { id } }", False),
    ('mutation { ...F } fragment F on Mutation { login(username: "a") }', False),
    ('mutation { __typename }', False),
])
def test_public_operations(query, public):
    assert is_public_operation(parse(query), None) is public


# --- the one-pass walk (issue 10, finding 1) and first/last (finding 7) ----------------------

RELAY_SDL = """
type Query {
  items(first: Int, last: Int): ItemConnection!
  list(first: Int): [Item!]!
  tags: [String!]!
}
type ItemConnection { edges: [ItemEdge!]! pageInfo: PageInfo! }
type ItemEdge { cursor: String! node: Item! }
type PageInfo { hasNextPage: Boolean! }
type Item { id: ID! tags: [String!]! }
"""


@pytest.fixture(scope="module")
def relay():
    from graphql import build_schema

    return build_schema(RELAY_SDL)


@pytest.mark.timeout(30)
def test_each_fragment_is_walked_once(supergraph):
    # Fragment n spreads fragment n-1 twice: 2^60 fields once expanded. Before, the walk
    # expanded every spread (this did not finish); each fragment is now summarised once.
    frags = ["fragment F0 on User { id }"]
    frags += [f"fragment F{i} on User {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 61)]
    query = "{ me { ...F60 } } " + " ".join(frags)
    started = time.perf_counter()
    with pytest.raises(LimitExceeded, match="more than 500 fields"):
        check(supergraph, query, max_field_merges=10**30, max_cost=10**30)
    assert time.perf_counter() - started < 1.0


def test_the_walk_stops_at_a_fragment_cycle(supergraph):
    with pytest.raises(LimitExceeded, match='spread fragment "A" within itself'):
        check(supergraph, "{ me { ...A } } fragment A on User { id ...B } "
                          "fragment B on User { ...A }")


def test_fields_merging_into_one_response_key_are_limited(supergraph):
    check(supergraph, "{ me { " + "id " * 60 + "} }")  # 1770 pairs
    with pytest.raises(LimitExceeded, match="merge into one response key"):
        check(supergraph, "{ me { " + "id " * 70 + "} }")  # 2415 pairs
    # Through fragments too: every copy of `id` merges with every other.
    frags = " ".join(f"fragment G{i} on User {{ id }}" for i in range(70))
    spreads = " ".join(f"...G{i}" for i in range(70))
    with pytest.raises(LimitExceeded, match="merge"):
        check(supergraph, "{ me { " + spreads + " } } " + frags)
    # Aliased apart, nothing merges.
    check(supergraph, "{ me { " + " ".join(f"a{i}: id" for i in range(30)) + " } }")


def test_directives_are_counted_at_every_spread(supergraph):
    check(supergraph, "{ me { id @include(if: true) } }", max_directives=1)
    with pytest.raises(LimitExceeded, match="directives"):
        check(supergraph, "{ me { ...A ...A } } fragment A on User { id @skip(if: false) }",
              max_directives=1)


def test_nesting_without_depth_is_bounded(supergraph):
    inline = "{ me { " + "... on User { " * 80 + "id" + " }" * 80 + " } }"
    with pytest.raises(LimitExceeded, match="nests selections"):
        check(supergraph, inline)


def test_tokens_are_counted_while_parsing():
    from graphql import GraphQLError

    from gateway.limits import parse_document

    parse_document("{ me { id } }", Limits(max_tokens=6))
    with pytest.raises(GraphQLError, match="more than 5 tokens"):
        parse_document("{ me { id } }", Limits(max_tokens=5))
    with pytest.raises(GraphQLError):
        parse_document("{ me { id } }" + "#\n" * 20, Limits(max_tokens=10))
    with pytest.raises(GraphQLError):
        parse_document("{ me { id } }" + " " * 100, Limits(max_document_chars=50))


def relay_cost(schema, query: str, variables=None, **kw) -> None:
    from gateway.limits import LimitChecker

    checker = LimitChecker(schema, Limits(**kw))
    document = parse(query)
    if checker.check(document) and variables is not None:
        checker.check_cost(document, None, variables)


@pytest.mark.parametrize(("arg", "cost"), [
    ("(first: 5)", 5 * (1 + 1 + (1 + 1))),   # items x (edges + node + id)
    ("(last: 7)", 7 * (1 + 1 + (1 + 1))),
    ("", 50 * 4),                             # absent: 50
    ("(first: 5000)", 200 * 4),               # capped at 200
])
def test_cost_counts_first_and_last_on_connections(relay, arg, cost):
    query = "{ items" + arg + " { edges { node { id } } } }"
    relay_cost(relay, query, max_cost=cost)
    with pytest.raises(LimitExceeded, match="cost"):
        relay_cost(relay, query, max_cost=cost - 1)


def test_cost_counts_first_on_lists_and_the_default_elsewhere(relay):
    relay_cost(relay, "{ list(first: 3) { tags } }", max_cost=3 * (1 + 10))
    with pytest.raises(LimitExceeded, match="cost"):
        relay_cost(relay, "{ list(first: 3) { tags } }", max_cost=3 * (1 + 10) - 1)
    relay_cost(relay, "{ tags }", max_cost=10)


def test_cost_with_a_variable_is_checked_with_its_value(relay):
    query = "query($n: Int) { items(first: $n) { edges { node { id } } } }"
    relay_cost(relay, query, {"n": 5}, max_cost=100)  # 20
    with pytest.raises(LimitExceeded, match="cost"):
        relay_cost(relay, query, {"n": 30}, max_cost=100)  # 120
    with pytest.raises(LimitExceeded, match="cost"):
        relay_cost(relay, query, {}, max_cost=100)  # absent: 50 -> 200
    relay_cost(relay, "query($n: Int = 5) { items(first: $n) { edges { node { id } } } }",
               {}, max_cost=100)  # the variable's default


def test_rate_limit_is_shared_out_over_gateway_replicas() -> None:
    """Two gateways of a limit of 4/s with a burst of 4: together they let 4 through, not 8."""
    replicas = [RateLimiter(rate=4.0, burst=4, replicas=2) for _ in range(2)]
    allowed = sum(r.allow("user:u", now=0.0) for _ in range(10) for r in replicas)
    assert allowed == 4
    # One second later each has refilled its share: the honest client goes on.
    assert all(r.allow("user:u", now=1.0) for r in replicas)
