"""Operation limits, trusted documents, rate limiting and the public-operation rule."""

from __future__ import annotations

import hashlib
import json

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
