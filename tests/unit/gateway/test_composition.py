"""Composition: supergraph SDL, runtime model, API schema and conflict errors."""

from __future__ import annotations

import pytest
from graphql import build_schema, print_schema

from gateway.composition import CompositionError, Supergraph, compose

pytestmark = pytest.mark.unit

LINK = 'extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", ' \
       'import: ["@key", "@shareable", "@external", "@requires", "@provides", "@inaccessible"])\n'


def sg(sdl: str, url: str = "http://x/graphql") -> tuple[str, str]:
    return (url, LINK + sdl)


def test_supergraph_has_link_and_join_machinery(supergraph_sdl):
    assert '@link(url: "https://specs.apollo.dev/join/v0.3", for: EXECUTION)' in supergraph_sdl
    assert 'ACCOUNTS @join__graph(name: "accounts", url: "http://accounts.test/graphql")' \
        in supergraph_sdl
    assert '@join__type(graph: PRODUCTS, key: "sku variant")' in supergraph_sdl
    assert '@join__type(graph: PRODUCTS, key: "upc")' in supergraph_sdl
    assert 'shippingEstimate: Int! @join__field(graph: REVIEWS, requires: "price weight")' \
        in supergraph_sdl
    assert '@join__field(graph: REVIEWS, provides: "username")' in supergraph_sdl
    assert "price: Int! @join__field(graph: PRODUCTS) @join__field(graph: REVIEWS, external: " \
        "true)" in supergraph_sdl
    assert '@join__unionMember(graph: PRODUCTS, member: "Book")' in supergraph_sdl
    assert '@join__implements(graph: ACCOUNTS, interface: "Account")' in supergraph_sdl
    assert "TOOLS @join__enumValue(graph: PRODUCTS)" in supergraph_sdl
    # The supergraph is itself valid GraphQL.
    build_schema(supergraph_sdl)


def test_api_schema_hides_federation_internals_and_inaccessible(supergraph):
    printed = print_schema(supergraph.api_schema)
    for hidden in ("_entities", "_service", "_Any", "_Entity", "_Service", "join__", "link__",
                   "internalNote", "secretCount", "@inaccessible"):
        assert hidden not in printed, hidden
    assert "shippingEstimate: Int!" in printed
    assert "union SearchResult = Product | Book" in printed


def test_runtime_model(supergraph):
    product = supergraph.types["Product"]
    assert product.keys == {"products": ["upc", "sku variant"], "reviews": ["sku variant"]}
    assert product.fields["name"].graphs == {"products", "reviews"}
    assert product.fields["price"].graphs == {"products"}
    assert product.fields["price"].defined_in == {"products", "reviews"}
    assert product.fields["shippingEstimate"].requires == {"reviews": "price weight"}
    assert supergraph.types["Review"].fields["author"].provides == {"reviews": "username"}
    assert supergraph.possible_types("Media", "products") == {"Book", "Movie"}
    assert supergraph.possible_types("Account", "accounts") == {"User", "Bot"}
    assert supergraph.types["Query"].fields["me"].graphs == {"accounts"}


def test_supergraph_round_trip_is_stable(supergraph_sdl, sdls):
    assert compose(sdls) == supergraph_sdl
    again = Supergraph.from_sdl(supergraph_sdl)
    assert print_schema(again.api_schema) == print_schema(Supergraph.from_sdl(
        supergraph_sdl).api_schema)


def test_kind_mismatch_names_both_subgraphs():
    with pytest.raises(CompositionError) as exc:
        compose({"a": sg("type Query { t: T } type T { id: ID }"),
                  "b": sg("type Query { u: T } interface T { id: ID }")})
    assert 'type "T" has mismatched kinds' in str(exc.value)
    assert 'subgraph "a"' in str(exc.value) and 'subgraph "b"' in str(exc.value)


def test_non_shareable_field_in_two_subgraphs():
    with pytest.raises(CompositionError, match=r'non-shareable field "T\.name"'):
        compose({"a": sg('type Query { t: T } type T @key(fields: "id") { id: ID! name: String }'),
                 "b": sg('type T @key(fields: "id") { id: ID! name: String } '
                         'type Query { x: Int }')})


def test_shareable_and_key_fields_may_repeat():
    out = compose({"a": sg('type Query { t: T } '
                           'type T @key(fields: "id") { id: ID! name: String @shareable }'),
                   "b": sg('type T @key(fields: "id") { id: ID! name: String @shareable } '
                           'type Query { x: Int }')})
    assert "name: String\n" in out  # resolvable everywhere: no join__field needed


def test_incompatible_field_types():
    with pytest.raises(CompositionError, match=r'field "T\.n" has incompatible types'):
        compose({"a": sg('type Query { t: T } type T @key(fields: "id") '
                         '{ id: ID! n: Int @shareable }'),
                 "b": sg('type T @key(fields: "id") { id: ID! n: String @shareable } '
                         'type Query { x: Int }')})


def test_nullability_difference_takes_the_nullable_type():
    out = compose({"a": sg('type Query { t: T } type T @key(fields: "id") '
                           '{ id: ID! n: Int! @shareable }'),
                   "b": sg('type T @key(fields: "id") { id: ID! n: Int @shareable } '
                           'type Query { x: Int }')})
    assert 'n: Int @join__field(graph: A, type: "Int!") @join__field(graph: B)' in out


def test_external_type_must_not_be_looser_than_the_resolved_one():
    with pytest.raises(CompositionError, match=r'"T\.n" is incompatible .*where marked @external'):
        compose({"a": sg('type Query { t: T } type T @key(fields: "id") { id: ID! n: Int! }'),
                 "b": sg('type T @key(fields: "id") { id: ID! n: Int @external '
                         'm: Int @requires(fields: "n") } type Query { x: Int }')})


def test_external_everywhere_is_an_error():
    with pytest.raises(CompositionError, match="marked @external in every subgraph"):
        compose({"a": sg('type Query { t: T } type T @key(fields: "id") '
                         '{ id: ID! n: Int @external }')})


def test_unknown_key_field_is_an_error():
    with pytest.raises(CompositionError, match=r'selects unknown field "T\.nope"'):
        compose({"a": sg('type Query { t: T } type T @key(fields: "nope") { id: ID! }')})


def test_invalid_subgraph_sdl_names_the_subgraph():
    with pytest.raises(CompositionError, match='subgraph "bad": invalid SDL'):
        compose({"bad": ("http://x", "type Query {")})
    with pytest.raises(CompositionError, match='subgraph "bad": invalid schema'):
        compose({"bad": sg("type Query { t: Missing }")})


def test_input_required_field_missing_elsewhere():
    with pytest.raises(CompositionError, match=r'input field "In\.b" is required'):
        compose({"a": sg("type Query { f(i: In): Int } input In { a: Int b: Int! }"),
                 "b": sg("type Query { g(i: In): Int } input In { a: Int }")})


def test_input_fields_are_intersected():
    out = compose({"a": sg("type Query { f(i: In): Int } input In { a: Int b: Int }"),
                   "b": sg("type Query { g(i: In): Int } input In { a: Int }")})
    api = print_schema(Supergraph.from_sdl(out).api_schema)
    assert "input In {\n  a: Int\n}" in api


def test_inaccessible_type_behind_accessible_field_is_an_error():
    with pytest.raises(CompositionError, match="returns @inaccessible type"):
        compose({"a": sg("type Query { s: S } type S @inaccessible { x: Int }")})


def test_unsatisfiable_field_without_resolvable_key():
    with pytest.raises(CompositionError, match=r'cannot satisfy "T\.extra"'):
        compose({"a": sg('type Query { t: T } type T @key(fields: "id") { id: ID! }'),
                 "b": sg('type T @key(fields: "id", resolvable: false) { id: ID! extra: Int } '
                         'type Query { x: Int }')})


def test_fed1_style_extend_type_and_renamed_roots():
    out = compose({"a": sg('schema { query: RootQuery } type RootQuery { t: T } '
                           'type T @key(fields: "id") { id: ID! }'),
                   "b": sg('extend type T @key(fields: "id") { id: ID! @external more: Int } '
                           'type Query { x: Int }')})
    api = print_schema(Supergraph.from_sdl(out).api_schema)
    assert "type Query {\n  t: T\n  x: Int\n}" in api
    assert "more: Int" in api


def test_reading_a_supergraph_without_join_graph_fails():
    with pytest.raises(CompositionError, match="no join__Graph"):
        Supergraph.from_sdl("type Query { a: Int }")


def test_unreachable_even_through_other_subgraphs():
    with pytest.raises(CompositionError, match=r'cannot satisfy "T\.extra"'):
        compose({"a": sg('type Query { t: T } type T @key(fields: "id") { id: ID! }'),
                 "b": sg('type T @key(fields: "id") { id: ID! } type Query { b: Int }'),
                 "c": sg('type T @key(fields: "sku") { sku: String! extra: Int } '
                         'type Query { c: Int }')})


def test_override_moves_the_field_like_apollo():
    link = ('extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", '
            'import: ["@key", "@override"])\n')
    out = compose({
        "a": ("http://a", link + 'type Query { t: T } type T @key(fields: "id") '
              '{ id: ID! n: Int old: Int }'),
        "b": ("http://b", link + 'type T @key(fields: "id") { id: ID! n: Int @override(from: "a") }'
              ' type Query { x: Int }')})
    assert '  n: Int @join__field(graph: B, override: "a")\n' in out
    assert Supergraph.from_sdl(out).types["T"].fields["n"].graphs == {"b"}
