"""Subgraph sets Apollo's composition rejects, with what our error must name."""

from __future__ import annotations

from tests.compat.cases import LINK

# name -> (subgraph SDLs, words the error must contain: type.field and subgraph names)
REJECTED: dict[str, tuple[dict[str, str], list[str]]] = {
    "unreachable_by_key": (
        {
            "a": 'type Query { t: T } type T @key(fields: "id") { id: ID! }',
            "b": 'type T @key(fields: "sku") { sku: String! name: String }',
        },
        ['"T.', '"a"', '"b"'],
    ),
    "only_unresolvable_keys": (
        {
            "a": 'type Query { t: T } type T @key(fields: "id") { id: ID! }',
            "b": 'type T @key(fields: "id", resolvable: false) { id: ID! name: String }',
        },
        ['"T.name"', '"a"', '"b"'],
    ),
    "non_shareable_field": (
        {
            "a": 'type Query { p: P } type P @key(fields: "id") { id: ID! name: String }',
            "b": 'type P @key(fields: "id") { id: ID! name: String }',
        },
        ['"P.name"', '"a"', '"b"'],
    ),
    "incompatible_field_types": (
        {
            "a": 'type Query { p: P } type P @key(fields: "id") { id: ID! n: Int @shareable }',
            "b": 'type P @key(fields: "id") { id: ID! n: String @shareable }',
        },
        ['"P.n"', '"a"', '"b"'],
    ),
    "requires_unknown_field": (
        {
            "a": 'type Query { p: P } type P @key(fields: "id") { id: ID! }',
            "b": 'type P @key(fields: "id") { id: ID! x: Int @requires(fields: "nope") }',
        },
        ['"P', "nope", '"b"'],
    ),
    "key_unknown_field": (
        {
            "a": 'type Query { p: P } type P @key(fields: "nope") { id: ID! }',
        },
        ['"P"', "nope", '"a"'],
    ),
    "external_everywhere": (
        {
            "a": 'type Query { p: P } type P @key(fields: "id") { id: ID! x: Int @external }',
            "b": 'type P @key(fields: "id") { id: ID! x: Int @external '
            'y: Int @requires(fields: "x") }',
        },
        ['"P.x"', '"a"', '"b"'],
    ),
    "root_field_unreachable_entity_field": (
        {
            "a": "type Query { items: [Item] } type Item { id: ID! }",
            "b": 'type Item @key(fields: "id") { id: ID! price: Int }',
        },
        ['"Item', '"a"', '"b"'],
    ),
    "value_type_field_out_of_reach": (
        {
            "a": "type Query { t: T } type T @shareable { id: ID! x: Int }",
            "b": "type Query { u: T } type T @shareable { id: ID! x: Int y: Int }",
        },
        ['"T.y"', '"a"', '"b"'],
    ),
    "requires_field_out_of_reach": (
        {
            "a": 'type Query { p: P } type P @key(fields: "id") { id: ID! }',
            "b": 'type P @key(fields: "id") { id: ID! x: Int @external y: Int @requires(fields: "x") }',
            "c": 'type P @key(fields: "sku") { sku: String! x: Int }',
        },
        ['"P.', '"c"'],
    ),
    "interface_object_without_interface": (
        {
            "a": "type Query { n: Int }",
            "b": 'type Media @key(fields: "id") @interfaceObject { id: ID! r: Int } '
            "type Query { m: Media }",
        },
        ['"Media"', '"b"'],
    ),
}

# @context / @fromContext (Federation v2.8): Apollo's CONTEXT_* rules.
LINK28 = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.8", import: '
    '["@key", "@external", "@shareable", "@context", "@fromContext", "@requiresScopes", '
    '"@authenticated", "@requires"])\n'
)
_T = (
    'type Query { t: T } type T @key(fields: "id") @context(name: "ctx") '
    "{ id: ID! prop: String u: U } "
)


def _u(arg: str, key: str = '@key(fields: "id")') -> str:
    return f"type U {key} {{ id: ID! f({arg}): Int }}"


CONTEXT_REJECTED: dict[str, tuple[dict[str, str], list[str]]] = {
    "context_name_with_underscore": (
        {
            "a": _T.replace('"ctx"', '"my_ctx"')
            + _u('x: String @fromContext(field: "$my_ctx { prop }")')
        },
        ["CONTEXT_NAME_INVALID", '"my_ctx"', '"T"', '"a"'],
    ),
    "context_never_set": (
        {"a": _T + _u('x: String @fromContext(field: "$other { prop }")')},
        ["CONTEXT_NOT_SET", '"U.f(x:)"', '"other"', '"a"'],
    ),
    "context_reference_without_dollar": (
        {"a": _T + _u('x: String @fromContext(field: "ctx { prop }")')},
        ["NO_CONTEXT_IN_SELECTION", '"U.f(x:)"', '"a"'],
    ),
    "context_selection_unknown_field": (
        {"a": _T + _u('x: String @fromContext(field: "$ctx { nope }")')},
        ["CONTEXT_INVALID_SELECTION", '"U.f(x:)"', "nope", '"a"'],
    ),
    "context_selection_two_fields": (
        {"a": _T + _u('x: String @fromContext(field: "$ctx { prop id }")')},
        ["CONTEXT_INVALID_SELECTION", '"U.f(x:)"', '"a"'],
    ),
    "context_non_null_argument": (
        {"a": _T + _u('x: String! @fromContext(field: "$ctx { prop }")')},
        ["CONTEXT_INVALID_SELECTION", '"U.f(x:)"', '"String!"', '"a"'],
    ),
    "context_type_mismatch": (
        {"a": _T + _u('x: Int @fromContext(field: "$ctx { prop }")')},
        ["CONTEXT_INVALID_SELECTION", '"U.f(x:)"', '"Int"', '"a"'],
    ),
    "context_field_without_resolvable_key": (
        {
            "a": _T
            + _u('x: String @fromContext(field: "$ctx { prop }")',
                 '@key(fields: "id", resolvable: false)')
        },
        ["CONTEXT_NO_RESOLVABLE_KEY", '"U"', '"a"'],
    ),
    "context_argument_with_default": (
        {"a": _T + _u('x: String = "d" @fromContext(field: "$ctx { prop }")')},
        ["CONTEXT_NOT_SET", '"U.f(x:)"', '"a"'],
    ),
    "context_on_interface_field": (
        {
            "a": 'type Query { t: T } type T @key(fields: "id") @context(name: "ctx") '
            "{ id: ID! prop: String u: I } interface I { id: ID! "
            'f(x: String @fromContext(field: "$ctx { prop }")): Int } '
            'type U implements I @key(fields: "id") { id: ID! f(x: String): Int }'
        },
        ["CONTEXT_NOT_SET", '"I.f(x:)"', '"a"'],
    ),
    "contextual_in_one_subgraph_only": (
        {
            "a": _T
            + 'type U @key(fields: "id") { id: ID! '
            'f(x: String @fromContext(field: "$ctx { prop }")): Int @shareable }',
            "b": 'type U @key(fields: "id") { id: ID! f(x: String!): Int @shareable }',
        },
        ["CONTEXTUAL_ARGUMENT_NOT_CONTEXTUAL_IN_ALL_SUBGRAPHS", '"U.f(x:)"', '"a"', '"b"'],
    ),
    "context_field_reachable_outside_context": (
        {"a": _T.replace("type Query { t: T }", "type Query { t: T item: U }")
         + _u('x: String @fromContext(field: "$ctx { prop }")')},
        ['"U.f(x:)"', '"Query.item"', '"ctx"', '"a"'],
    ),
    "context_reads_data_the_field_does_not_protect": (
        {
            "a": 'type Query { t: T } type T @key(fields: "id") @context(name: "ctx") '
            "{ id: ID! prop: String @requiresScopes(scopes: [[\"hr\"]]) u: U } "
            + _u('x: String @fromContext(field: "$ctx { prop }")')
        },
        ["MISSING_TRANSITIVE_AUTH_REQUIREMENTS", '"U.f"', '"T.prop"', '"a"'],
    ),
    "requires_reads_data_the_field_does_not_protect": (
        {
            "a": 'type Query { t: T } type T @key(fields: "id") '
            "{ id: ID! salary: Int @authenticated }",
            "b": 'type T @key(fields: "id") { id: ID! salary: Int @external '
            'band: String @requires(fields: "salary") }',
        },
        ["MISSING_TRANSITIVE_AUTH_REQUIREMENTS", '"T.band"', '"T.salary"', '"b"'],
    ),
}
REJECTED.update(CONTEXT_REJECTED)

SUBGRAPHS = {
    name: {n: (LINK28 if name in CONTEXT_REJECTED else LINK) + sdl for n, sdl in subs.items()}
    for name, (subs, _) in REJECTED.items()
}
