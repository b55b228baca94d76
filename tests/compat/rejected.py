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

SUBGRAPHS = {
    name: {n: LINK + sdl for n, sdl in subs.items()} for name, (subs, _) in REJECTED.items()
}
