"""Operations run through both gateways by the compatibility test: (name, query, variables).

Left out on purpose: `{ me { id: name reviews { id } } }` (a client alias on a key field's
name). @apollo/gateway 2.14 answers `me.id` with the key value instead of `name`; this gateway
answers `name` (see tests/unit/gateway/test_planner.py and test_executor.py).
"""

from __future__ import annotations

from typing import Any

CORPUS: list[tuple[str, str, dict[str, Any] | None]] = [
    # root fields, one and several subgraphs
    ("me", "{ me { id name username } }", None),
    ("users", "{ users { id name } }", None),
    ("user_by_id", '{ user(id: "2") { id name } }', None),
    ("user_missing", '{ user(id: "404") { id name } }', None),
    ("three_subgraphs", "{ me { id } topProducts { upc } reviews { id } }", None),
    ("typename_root", "{ __typename me { __typename id } }", None),
    ("products_first", "{ topProducts(first: 2) { upc name price weight category } }", None),
    ("product_by_upc", '{ product(upc: "p3") { upc sku variant name } }', None),
    ("review_by_id", '{ review(id: "r2") { id body stars } }', None),
    # entity jumps
    ("user_reviews", "{ me { name reviews { id body } } }", None),
    ("users_reviews", "{ users { name reviews { stars } } }", None),
    ("review_author_name", "{ reviews { id author { id name } } }", None),
    ("review_author_provided", "{ reviews { id author { username } } }", None),
    ("review_author_both", "{ reviews { author { username name nickname } } }", None),
    ("review_product_name_shareable", "{ reviews { product { name } } }", None),
    ("review_product_price", "{ reviews { product { upc price category } } }", None),
    ("product_reviews_compound_key", "{ topProducts { upc reviews { id body } } }", None),
    ("a_b_a", "{ me { reviews { product { reviews { author { name } } } } } }", None),
    ("deep_chain", "{ topProducts { reviews { author { reviews { product { name upc } } } } } }",
     None),
    ("dedup_reps", "{ reviews { author { name } product { name price } } }", None),
    ("requires", "{ topProducts { name shippingEstimate } }", None),
    ("requires_from_reviews", "{ reviews { product { shippingEstimate } } }", None),
    ("requires_with_more", "{ reviews { product { upc price weight shippingEstimate } } }", None),
    ("requires_nested", "{ me { reviews { product { shippingEstimate reviews { id } } } } }",
     None),
    ("bot_owner_jump", "{ accounts { ... on Bot { owner { reviews { id } } } } }", None),
    # aliases, variables, fragments
    ("aliases", "{ a: me { n: name i: id } b: user(id: \"2\") { n: name } }", None),
    ("alias_same_field_twice", '{ x: user(id: "1") { name } y: user(id: "3") { name } }', None),
    ("alias_in_jump", "{ me { r: reviews { b: body p: product { n: name s: shippingEstimate } } } }",
     None),
    ("variables", "query($id: ID!) { user(id: $id) { id name } }", {"id": "3"}),
    ("variables_default", "query($n: Int = 1) { topProducts(first: $n) { upc } }", None),
    ("variables_input_object", "query($f: ProductFilter) { topProducts(filter: $f) { upc } }",
     {"f": {"category": "FOOD"}}),
    ("variables_enum_literal", "{ topProducts(filter: {category: TOOLS, maxPrice: 15}) { upc } }",
     None),
    ("variables_in_jump", "query($first: Int!) { reviews { author { name } } "
     "topProducts(first: $first) { reviews { id } } }", {"first": 1}),
    ("named_fragment", "query { me { ...U } } fragment U on User { id name reviews { id } }",
     None),
    ("nested_fragments", "{ reviews { ...R } } fragment R on Review { id author { ...A } } "
     "fragment A on User { name username }", None),
    ("inline_fragment_same_type", "{ me { ... on User { name } id } }", None),
    ("operation_name", "query A { me { id } } query B { users { id } }", None),
    ("operation_name_missing", "query A { me { id } } query B { users { id } }", None),
    ("operation_name_unknown", "query A { me { id } }", None),
    # @include / @skip
    ("include_true", "query($x: Boolean!) { me { name @include(if: $x) } }", {"x": True}),
    ("include_false", "query($x: Boolean!) { me { name @include(if: $x) id } }", {"x": False}),
    ("skip_jump", "query($x: Boolean!) { me { id reviews @skip(if: $x) { id } } }", {"x": True}),
    ("skip_fragment", "query($x: Boolean!) { me { id ... @skip(if: $x) { name } } }",
     {"x": False}),
    ("include_literal", "{ me { id name @include(if: false) username @skip(if: false) } }", None),
    # interfaces and unions
    ("interface", "{ media { id title } }", None),
    ("interface_typenames", "{ media { __typename ... on Book { pages } ... on Movie { minutes } } }",
     None),
    ("interface_fragment", "{ media { ...M } } fragment M on Media { title ... on Book { pages } }",
     None),
    ("interface_with_entity", "{ accounts { id name ... on User { reviews { stars } } } }", None),
    ("interface_bot", "{ accounts { __typename ... on Bot { owner { name } } } }", None),
    ("union", '{ search(term: "ham") { ... on Product { name } ... on Book { title } } }', None),
    ("union_typename", '{ search(term: "") { __typename } }', None),
    ("union_jump", '{ search(term: "") { ... on Product { reviews { author { name } } } } }',
     None),
    ("union_requires", '{ search(term: "bread") { ... on Product { shippingEstimate } } }', None),
    # introspection
    ("introspection_type", '{ __type(name: "Product") { name fields { name } } }', None),
    ("introspection_schema", "{ __schema { queryType { name } mutationType { name } } }", None),
    ("introspection_with_data", '{ me { id } __type(name: "Media") { possibleTypes { name } } }',
     None),
    # errors and nulls
    ("error_root_code", "{ boom }", None),
    ("error_root_and_data", "{ boom me { name } }", None),
    ("error_no_code", "{ plainError }", None),
    ("error_in_entity", "{ reviews { id flaky } }", None),
    ("error_in_entity_jump", "{ reviews { author { nickname } } }", None),
    ("error_in_product_entity", "{ reviews { product { priceError } } }", None),
    ("null_bubble_subgraph", "{ brokenUser { id name } }", None),
    ("null_bubble_entity", '{ review(id: "r4") { id strictBody } }', None),
    ("null_bubble_to_root", "{ topProducts { reviews { strictBody } } }", None),
    ("null_bubble_list", "{ reviews { id strictBody } }", None),
    ("validation_unknown_field", "{ me { nope } }", None),
    ("validation_entities", '{ _entities(representations: []) { __typename } }', None),
    ("validation_service", "{ _service { sdl } }", None),
    ("validation_inaccessible_field", "{ me { internalNote } }", None),
    ("validation_inaccessible_root", "{ secretCount }", None),
    ("parse_error", "{ me { ", None),
    ("missing_variable", "query($id: ID!) { user(id: $id) { id } }", {}),
    ("wrong_variable_type", "query($n: Int!) { topProducts(first: $n) { upc } }", {"n": "x"}),
    ("slow_but_in_time", "{ slow(ms: 30) me { id } }", None),
    # mutations (state restored by the last ones)
    ("mutation_login", 'mutation { login(username: "ada") }', None),
    ("mutation_sequence", 'mutation { a: rename(id: "2", name: "Al") { name } '
     'b: setPrice(upc: "p2", price: 4) { price } c: rename(id: "2", name: "Alan") { name } '
     'd: setPrice(upc: "p2", price: 3) { price name } }', None),
    ("mutation_entity_result", 'mutation { addReview(upc: "p1", body: "x") { id author { name } '
     "product { name } } }", None),
    ("mutation_error", 'mutation { addReview(upc: "p1", body: "x", stars: 9) { id } }', None),
    ("mutation_variables", "mutation($u: String!) { login(username: $u) refresh(token: \"t\") }",
     {"u": "grace"}),
]

# Operations sent with an operationName.
OPERATION_NAMES = {"operation_name": "B", "operation_name_unknown": "Nope"}
