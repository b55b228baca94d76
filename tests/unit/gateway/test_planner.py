"""Query plans: which subgraph fetches what, in which order, batched how."""

from __future__ import annotations

import pytest
from graphql import parse

from gateway.planner import QueryPlanner, ValidationFailed, build_plan

pytestmark = pytest.mark.unit


def plan_of(supergraph, query: str, name: str | None = None):
    return build_plan(supergraph, supergraph.api_schema, parse(query), name).describe()


def test_root_fields_grouped_by_subgraph_in_one_level(supergraph):
    groups = plan_of(supergraph, "{ me { id } users { name } topProducts { upc } }")
    assert groups == [[[("accounts", "query{me{id} users{name}}"),
                        ("products", "query{topProducts{upc}}")]]]


def test_entity_jump_injects_typename_and_key(supergraph):
    (group,) = plan_of(supergraph, "{ me { name reviews { body } } }")
    assert group[0] == [("accounts", "query{me{name __typename id}}")]
    assert group[1] == [("reviews", "query($r0:[_Any!]!){_0:_entities(representations:$r0)"
                                    "{__typename ...on User{reviews{body}}}}")]


def test_compound_key_is_used_to_reach_reviews(supergraph):
    (group,) = plan_of(supergraph, "{ topProducts { reviews { id } } }")
    assert group[0] == [("products", "query{topProducts{__typename sku variant}}")]


def test_provides_avoids_a_jump(supergraph):
    (group,) = plan_of(supergraph, "{ reviews { author { username } } }")
    assert len(group) == 1  # username is provided by reviews: no call to accounts
    (group,) = plan_of(supergraph, "{ reviews { author { name } } }")
    assert [b[0] for b in group[1]] == ["accounts"]


def test_requires_fetches_required_fields_first(supergraph):
    (group,) = plan_of(supergraph, "{ reviews { product { shippingEstimate } } }")
    graphs = [[b[0] for b in level] for level in group]
    assert graphs == [["reviews"], ["products"], ["reviews"]]
    assert "...on Product{price weight}" in group[1][0][1]
    assert "...on Product{shippingEstimate}" in group[2][0][1]


def test_requires_fields_from_the_parent_fetch_when_it_has_them(supergraph):
    (group,) = plan_of(supergraph, "{ topProducts { shippingEstimate } }")
    assert group[0] == [("products", "query{topProducts{__typename sku variant price weight}}")]
    assert [b[0] for b in group[1]] == ["reviews"]


def test_nested_jumps_a_b_a(supergraph):
    (group,) = plan_of(supergraph, "{ me { reviews { author { name } } } }")
    assert [[b[0] for b in level] for level in group] == [["accounts"], ["reviews"],
                                                          ["accounts"]]


def test_entity_fetches_of_one_parent_share_a_call(supergraph):
    (group,) = plan_of(supergraph, "{ me { reviews { id } } users { reviews { id } } }")
    assert len(group[1]) == 1
    graph, query = group[1][0]
    assert graph == "reviews"
    assert "_0:_entities(representations:$r0)" in query
    assert "_1:_entities(representations:$r1)" in query


def test_a_fetch_waits_only_for_its_parent(supergraph):
    # Two parents (accounts, products): two calls, each started when its own parent is done.
    plan = build_plan(supergraph, supergraph.api_schema,
                      parse("{ me { reviews { id } } topProducts { reviews { id } } }"), None)
    text = plan.print()
    assert text.count('Fetch(service: "reviews")') == 2
    assert text.startswith("QueryPlan {\n  Parallel {\n    Sequence {")


def test_mutations_are_sequential_groups_in_order(supergraph):
    groups = plan_of(supergraph, 'mutation { login(username: "a") refresh(token: "t") '
                                 'addReview(upc: "p1", body: "b") { id } '
                                 'rename(id: "1", name: "n") { name } }')
    assert [[level[0][0] for level in g] for g in groups] == [["accounts"], ["reviews"],
                                                              ["accounts"]]
    assert groups[0][0][0][1] == 'mutation{login(username: "a") refresh(token: "t")}'


def test_abstract_types_are_split_by_concrete_type(supergraph):
    (group,) = plan_of(supergraph, "{ accounts { name ... on User { reviews { id } } } }")
    assert group[0] == [("accounts", "query{accounts{__typename ...on Bot{name} "
                                     "...on User{name __typename id}}}")]
    (group,) = plan_of(supergraph, '{ search(term: "") { ... on Book { title } } }')
    assert group[0] == [("products", 'query{search(term: ""){__typename ...on Book{title}}}')]


def test_variables_are_declared_only_where_used(supergraph):
    (group,) = plan_of(supergraph, "query($n: Int, $u: ID!) { topProducts(first: $n) { upc } "
                                   "user(id: $u) { id } }")
    assert ("products", "query($n: Int){topProducts(first: $n){upc}}") in group[0]
    assert ("accounts", "query($u: ID!){user(id: $u){id}}") in group[0]


def test_fragments_and_aliases_are_inlined(supergraph):
    (group,) = plan_of(supergraph, "{ x: me { ...F } } fragment F on User { n: name }")
    assert group == [[("accounts", "query{x:me{n:name}}")]]


def test_include_skip_directives_are_forwarded(supergraph):
    (group,) = plan_of(supergraph, "query($x: Boolean!) { me { name @include(if: $x) } }")
    assert group == [[("accounts", "query($x: Boolean!){me{name @include(if: $x)}}")]]


def test_introspection_is_answered_locally(supergraph):
    plan = build_plan(supergraph, supergraph.api_schema,
                      parse('{ __type(name: "User") { name } }'), None)
    assert plan.groups == [] and plan.introspection is not None


def test_plan_cache_is_lru_and_keyed_on_the_exact_document(supergraph):
    qp = QueryPlanner(supergraph, cache_size=2)
    a = qp.get("{ me { id } }", None)
    assert qp.get("{ me { id } }", None) is a
    assert qp.get("{ me {   id } }", None) is not a  # whitespace may sit inside a literal
    qp.get("{ users { id } }", None)
    qp.get("{ reviews { id } }", None)
    assert qp.peek("{ me { id } }", None) is None
    with pytest.raises(ValidationFailed):
        qp.get("{ _service { sdl } }", None)


def test_client_alias_on_a_key_name_does_not_clash_with_the_key(supergraph):
    (group,) = plan_of(supergraph, "{ me { id: name reviews { id } } }")
    assert group[0] == [("accounts", "query{me{id:name __typename _fk_id:id}}")]


def test_multi_hop_key_chain(tmp_path):
    from gateway.composition import Supergraph, compose

    link = ('extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", '
            'import: ["@key"])\n')
    sdl = compose({
        "a": ("http://a", link + 'type Query { t: T } type T @key(fields: "id") { id: ID! }'),
        "b": ("http://b", link + 'type T @key(fields: "id") @key(fields: "sku") '
              '{ id: ID! sku: String! } type Query { b: Int }'),
        "c": ("http://c", link + 'type T @key(fields: "sku") { sku: String! extra: Int } '
              'type Query { c: Int }'),
    })
    sg = Supergraph.from_sdl(sdl)
    (group,) = build_plan(sg, sg.api_schema, parse("{ t { extra } }"), None).describe()
    assert [[b[0] for b in level] for level in group] == [["a"], ["b"], ["c"]]
    assert "...on T{__typename sku}" in group[1][0][1]
    assert "...on T{extra}" in group[2][0][1]


def _override_supergraph(label: str):
    from gateway.composition import Supergraph, compose

    link = ('extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", '
            'import: ["@key", "@override"])\n')
    return Supergraph.from_sdl(compose({
        "old": ("http://old", link + 'type Query { accounts: [Account] } '
                'type Account @key(fields: "id") { id: ID! plan: String }'),
        "new": ("http://new", link + 'type Account @key(fields: "id") { id: ID! '
                f'plan: String @override(from: "old", label: "{label}") }}'),
    }))


def _graphs_asked(qp, query="{ accounts { plan } }"):
    plan = qp.plan_for(qp.get(query, None), None)
    return [b[0] for level in plan.describe()[0] for b in level]


def test_progressive_override_percent_labels_are_drawn_per_request():
    import random

    assert _graphs_asked(QueryPlanner(_override_supergraph("percent(100)"))) == ["old", "new"]
    assert _graphs_asked(QueryPlanner(_override_supergraph("percent(0)"))) == ["old"]
    qp = QueryPlanner(_override_supergraph("percent(30)"), rng=random.Random(7))
    moved = sum(_graphs_asked(qp) == ["old", "new"] for _ in range(400))
    assert 80 < moved < 160  # about 30 % of requests go to the overriding subgraph


def test_progressive_override_custom_label_only_when_switched_on():
    sg = _override_supergraph("billing-v2")
    assert _graphs_asked(QueryPlanner(sg)) == ["old"]
    assert _graphs_asked(QueryPlanner(sg, enabled_labels=["billing-v2"])) == ["old", "new"]


def test_doorward_gateway_plan_prints_a_typed_plan(supergraph_sdl, tmp_path):
    from typer.testing import CliRunner

    from gateway.cli import gateway_app

    path = tmp_path / "supergraph.graphql"
    path.write_text(supergraph_sdl)
    result = CliRunner().invoke(gateway_app, ["plan", "--supergraph", str(path), "--query",
                                              "{ me { name reviews { body } } }"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:3] == ["QueryPlan {", "  Sequence {",
                                              '    Fetch(service: "accounts") {']
    assert 'Flatten(path: "me")' in result.output
    bad = CliRunner().invoke(gateway_app, ["plan", "--supergraph", str(path), "--query",
                                           "{ nope }"])
    assert bad.exit_code == 1


def test_condition_node_for_a_root_fetch_under_one_variable(supergraph):
    plan = build_plan(supergraph, supergraph.api_schema,
                      parse("query($x: Boolean!) { me @include(if: $x) { name } }"), None)
    assert plan.print().splitlines()[1] == "  Include(if: $x) {"
