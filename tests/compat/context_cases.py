"""Small supergraphs with `@context` / `@fromContext` (Federation v2.8), from the examples of
Apollo's docs ("Saving and referencing data with contexts") and the spec, each operation with
the answer the spec gives.

@apollo/gateway refuses every one of these supergraphs (context/v0.1 is "for: SECURITY" and
only Apollo Router implements it: UNSUPPORTED_LINKED_FEATURE), so the side-by-side comparison
is with @apollo/query-planner's plan for the same operation (the plan Apollo Router runs):
the same fetches, to the same subgraphs, at the same paths, with the same contextual
arguments. The data is asserted against the spec's answer written here.

A field with a contextual argument answers by the argument's value (`__args`); without the
value it raises (`default` is an error), so a gateway that does not fill the argument fails.
"""

from __future__ import annotations

from typing import Any

from tests.compat.cases import Case, _objs
from tests.compat.datagraph import ref

LINK28 = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.8", import: '
    '["@key", "@shareable", "@external", "@requires", "@provides", "@context", '
    '"@fromContext"])\n'
)
MISSING = {"__error": "the contextual argument was not sent"}


def by_arg(name: str, **values: Any) -> dict[str, Any]:
    """A field value per value of its (only) argument `name`."""
    return {"__args": {repr([(name, k)]): v for k, v in values.items()}, "default": MISSING}


# name -> (case, {operation name: expected data})
CONTEXT_CASES: list[tuple[Case, dict[str, Any]]] = []


def _case(case: Case, expected: dict[str, Any]) -> None:
    assert {op[0] for op in case.operations} == set(expected), case.name
    CONTEXT_CASES.append((case, expected))


# The docs' example: a user's currency (resolved by another subgraph) read by transactions.
_case(
    Case(
        "ctx_user_currency",
        {
            "users": LINK28
            + """
type Query { me: User! users: [User!]! }
type User @key(fields: "id") @context(name: "userContext") {
  id: ID! name: String! userCurrency: Currency! @external transactions: [Transaction!]!
}
type Currency @shareable { id: ID! isoCode: String! }
type Transaction @key(fields: "id") {
  id: ID! amount: Int!
  amountInUserCurrency(
    currencyCode: String @fromContext(field: "$userContext { userCurrency { isoCode } }")
  ): Int!
}
""",
            "accounts": LINK28
            + """
type User @key(fields: "id") { id: ID! userCurrency: Currency! }
type Currency @shareable { id: ID! isoCode: String! }
""",
        },
        _objs(
            {
                "__typename": "User",
                "id": "u1",
                "name": "Ada",
                "userCurrency": {"id": "c1", "isoCode": "EUR"},
                "transactions": [ref("Transaction", "t1"), ref("Transaction", "t2")],
            },
            {
                "__typename": "User",
                "id": "u2",
                "name": "Bob",
                "userCurrency": {"id": "c2", "isoCode": "GBP"},
                "transactions": [ref("Transaction", "t2")],
            },
            {
                "__typename": "Transaction",
                "id": "t1",
                "amount": 100,
                "amountInUserCurrency": by_arg("currencyCode", EUR=92, GBP=79),
            },
            {
                "__typename": "Transaction",
                "id": "t2",
                "amount": 10,
                "amountInUserCurrency": by_arg("currencyCode", EUR=9, GBP=8),
            },
        ),
        {"me": ref("User", "u1"), "users": [ref("User", "u1"), ref("User", "u2")]},
        [
            ("ctx_value_from_other_subgraph", "{ me { transactions { amountInUserCurrency } } }"),
            (
                "ctx_with_parent_fields",
                "{ me { name transactions { id amount amountInUserCurrency } } }",
            ),
            (
                "ctx_client_also_selects_context_field",
                "{ me { userCurrency { isoCode } transactions { a: amountInUserCurrency } } }",
            ),
            (
                "ctx_client_alias_takes_context_key",
                "{ me { userCurrency: name transactions { amountInUserCurrency } } }",
            ),
            (
                "ctx_same_entity_different_contexts",
                "{ users { id transactions { id amountInUserCurrency } } }",
            ),
            (
                "ctx_field_under_include_true",
                "query($x: Boolean!) { me { transactions { id amountInUserCurrency "
                "@include(if: $x) } } }",
                {"x": True},
            ),
            (
                "ctx_field_under_include_false",
                "query($x: Boolean!) { me { transactions { id amountInUserCurrency "
                "@include(if: $x) } } }",
                {"x": False},
            ),
            (
                "ctx_in_fragments",
                "{ me { ...M } } fragment M on User { transactions { ... on Transaction "
                "{ amountInUserCurrency } } }",
            ),
            (
                "ctx_two_aliases_of_the_list",
                "{ me { a: transactions { amountInUserCurrency } b: transactions { id } } }",
            ),
            (
                "ctx_beside_another_root_field",
                "{ users { name } me { transactions { amountInUserCurrency } } }",
            ),
        ],
    ),
    {
        "ctx_value_from_other_subgraph": {
            "me": {"transactions": [{"amountInUserCurrency": 92}, {"amountInUserCurrency": 9}]}
        },
        "ctx_with_parent_fields": {
            "me": {
                "name": "Ada",
                "transactions": [
                    {"id": "t1", "amount": 100, "amountInUserCurrency": 92},
                    {"id": "t2", "amount": 10, "amountInUserCurrency": 9},
                ],
            }
        },
        "ctx_client_also_selects_context_field": {
            "me": {"userCurrency": {"isoCode": "EUR"}, "transactions": [{"a": 92}, {"a": 9}]}
        },
        "ctx_client_alias_takes_context_key": {
            "me": {
                "userCurrency": "Ada",
                "transactions": [{"amountInUserCurrency": 92}, {"amountInUserCurrency": 9}],
            }
        },
        "ctx_field_under_include_true": {
            "me": {
                "transactions": [
                    {"id": "t1", "amountInUserCurrency": 92},
                    {"id": "t2", "amountInUserCurrency": 9},
                ]
            }
        },
        "ctx_field_under_include_false": {"me": {"transactions": [{"id": "t1"}, {"id": "t2"}]}},
        "ctx_in_fragments": {
            "me": {"transactions": [{"amountInUserCurrency": 92}, {"amountInUserCurrency": 9}]}
        },
        "ctx_two_aliases_of_the_list": {
            "me": {
                "a": [{"amountInUserCurrency": 92}, {"amountInUserCurrency": 9}],
                "b": [{"id": "t1"}, {"id": "t2"}],
            }
        },
        "ctx_beside_another_root_field": {
            "users": [{"name": "Ada"}, {"name": "Bob"}],
            "me": {"transactions": [{"amountInUserCurrency": 92}, {"amountInUserCurrency": 9}]},
        },
        "ctx_same_entity_different_contexts": {
            "users": [
                {
                    "id": "u1",
                    "transactions": [
                        {"id": "t1", "amountInUserCurrency": 92},
                        {"id": "t2", "amountInUserCurrency": 9},
                    ],
                },
                {"id": "u2", "transactions": [{"id": "t2", "amountInUserCurrency": 8}]},
            ]
        },
    },
)

# Nested contexts: the nearest enclosing object that sets the context gives the value.
_case(
    Case(
        "ctx_nearest_ancestor",
        {
            "files": LINK28
            + """
type Query { root: Folder! }
type Folder @key(fields: "id") @context(name: "folder") {
  id: ID! name: String! folders: [Folder!]! files: [File!]!
}
type File @key(fields: "id") {
  id: ID!
  path(dir: String @fromContext(field: "$folder { name }"), sep: String): String!
}
""",
            "sizes": LINK28
            + """
type File @key(fields: "id") { id: ID! size: Int! }
""",
        },
        _objs(
            {
                "__typename": "Folder",
                "id": "f1",
                "name": "root",
                "folders": [ref("Folder", "f2")],
                "files": [ref("File", "x")],
            },
            {
                "__typename": "Folder",
                "id": "f2",
                "name": "docs",
                "folders": [],
                "files": [ref("File", "x"), ref("File", "y")],
            },
            {
                "__typename": "File",
                "id": "x",
                "size": 3,
                "path": {
                    "__args": {
                        repr([("dir", "root")]): "root/x",
                        repr([("dir", "docs")]): "docs/x",
                        repr([("dir", "docs"), ("sep", ":")]): "docs:x",
                        repr([("dir", "root"), ("sep", ":")]): "root:x",
                    },
                    "default": MISSING,
                },
            },
            {
                "__typename": "File",
                "id": "y",
                "size": 5,
                "path": {
                    "__args": {
                        repr([("dir", "docs")]): "docs/y",
                        repr([("dir", "docs"), ("sep", ":")]): "docs:y",
                    },
                    "default": MISSING,
                },
            },
        ),
        {"root": ref("Folder", "f1")},
        [
            (
                "ctx_nearest_folder_wins",
                "{ root { files { path } folders { name files { id path } } } }",
            ),
            ("ctx_client_alias_takes_local_context_key", "{ root { name: id files { path } } }"),
            (
                "ctx_with_client_argument",
                "{ root { folders { files { path(sep: \":\") } } } }",
            ),
            (
                "ctx_with_client_variable",
                "query($s: String) { root { files { path(sep: $s) size } folders { files "
                "{ p: path(sep: $s) size } } } }",
                {"s": ":"},
            ),
        ],
    ),
    {
        "ctx_nearest_folder_wins": {
            "root": {
                "files": [{"path": "root/x"}],
                "folders": [
                    {
                        "name": "docs",
                        "files": [{"id": "x", "path": "docs/x"}, {"id": "y", "path": "docs/y"}],
                    }
                ],
            }
        },
        "ctx_client_alias_takes_local_context_key": {
            "root": {"name": "f1", "files": [{"path": "root/x"}]}
        },
        "ctx_with_client_argument": {
            "root": {"folders": [{"files": [{"path": "docs:x"}, {"path": "docs:y"}]}]}
        },
        "ctx_with_client_variable": {
            "root": {
                "files": [{"path": "root:x", "size": 3}],
                "folders": [{"files": [{"p": "docs:x", "size": 3}, {"p": "docs:y", "size": 5}]}],
            }
        },
    },
)

# One context set by two types, read through type conditions (the spec's
# `$ctx ... on A { prop } ... on B { altProp }`).
_case(
    Case(
        "ctx_type_conditions",
        {
            "main": LINK28
            + """
type Query { a: A! b: B! }
type A @key(fields: "id") @context(name: "ctx") { id: ID! prop: String! child: Child! }
type B @key(fields: "id") @context(name: "ctx") { id: ID! altProp: String! child: Child! }
type Child @key(fields: "id") {
  id: ID!
  field(arg: String @fromContext(field: "$ctx ... on A { prop } ... on B { altProp }")): Int!
}
""",
            "other": LINK28
            + """
type Child @key(fields: "id") { id: ID! label: String! }
""",
        },
        _objs(
            {"__typename": "A", "id": "a1", "prop": "pa", "child": ref("Child", "c1")},
            {"__typename": "B", "id": "b1", "altProp": "pb", "child": ref("Child", "c1")},
            {
                "__typename": "Child",
                "id": "c1",
                "label": "one",
                "field": by_arg("arg", pa=1, pb=2),
            },
        ),
        {"a": ref("A", "a1"), "b": ref("B", "b1")},
        [
            ("ctx_condition_per_type", "{ a { child { field } } b { child { field label } } }"),
            ("ctx_condition_one_type", "{ b { altProp child { id field } } }"),
        ],
    ),
    {
        "ctx_condition_per_type": {
            "a": {"child": {"field": 1}},
            "b": {"child": {"field": 2, "label": "one"}},
        },
        "ctx_condition_one_type": {"b": {"altProp": "pb", "child": {"id": "c1", "field": 2}}},
    },
)

# The context is set on a type reached through an entity jump: its value and the contextual
# field both come from the subgraph that declares them, after another subgraph's root field.
_case(
    Case(
        "ctx_after_entity_jump",
        {
            "catalog": LINK28
            + """
type Query { featured: [Product!]! }
type Product @key(fields: "upc") { upc: ID! }
""",
            "pricing": LINK28
            + """
type Product @key(fields: "upc") @context(name: "product") {
  upc: ID! region: String! offers: [Offer!]!
}
type Offer @key(fields: "id") {
  id: ID!
  price(region: String @fromContext(field: "$product { region }")): Int!
}
""",
        },
        {
            "Product:p1": {
                "__typename": "Product",
                "upc": "p1",
                "region": "EU",
                "offers": [ref("Offer", "o1")],
            },
            "Product:p2": {
                "__typename": "Product",
                "upc": "p2",
                "region": "US",
                "offers": [ref("Offer", "o1")],
            },
            "Offer:o1": {"__typename": "Offer", "id": "o1", "price": by_arg("region", EU=5, US=6)},
        },
        {"featured": [ref("Product", "p1"), ref("Product", "p2")]},
        [
            ("ctx_reached_by_key", "{ featured { upc offers { id price } } }"),
            ("ctx_reached_by_key_price_only", "{ featured { offers { price } } }"),
        ],
    ),
    {
        "ctx_reached_by_key": {
            "featured": [
                {"upc": "p1", "offers": [{"id": "o1", "price": 5}]},
                {"upc": "p2", "offers": [{"id": "o1", "price": 6}]},
            ]
        },
        "ctx_reached_by_key_price_only": {
            "featured": [{"offers": [{"price": 5}]}, {"offers": [{"price": 6}]}]
        },
    },
)

# A context set on an interface reaches every implementation; one set on a union, through
# type conditions, every member; a list-typed value.
_case(
    Case(
        "ctx_abstract_holders",
        {
            "a": LINK28
            + """
type Query { things: [Thing!]! any: [Holder!]! }
interface Thing @context(name: "thing") { id: ID! tag: String }
union Holder @context(name: "holder") = Box | Bag
type Box implements Thing @key(fields: "id") {
  id: ID! tag: String tags: [String] items: [Item!]!
}
type Bag implements Thing @key(fields: "id") {
  id: ID! tag: String tags: [String] items: [Item!]!
}
type Item @key(fields: "id") {
  id: ID!
  label(t: String @fromContext(field: "$thing { tag }")): String
  count(ts: [String] @fromContext(field: "$holder ... on Box { tags } ... on Bag { tags }")): Int
}
""",
            "b": LINK28
            + """
type Item @key(fields: "id") { id: ID! weight: Int }
""",
        },
        _objs(
            {
                "__typename": "Box",
                "__interfaces": ["Thing"],
                "id": "box",
                "tag": "fragile",
                "tags": ["a", "b"],
                "items": [ref("Item", "i1")],
            },
            {
                "__typename": "Bag",
                "__interfaces": ["Thing"],
                "id": "bag",
                "tag": "soft",
                "tags": ["c"],
                "items": [ref("Item", "i1"), ref("Item", "i2")],
            },
            {
                "__typename": "Item",
                "id": "i1",
                "weight": 7,
                "label": by_arg("t", fragile="i1 (fragile)", soft="i1 (soft)"),
                "count": {
                    "__args": {repr([("ts", ["a", "b"])]): 2, repr([("ts", ["c"])]): 1},
                    "default": MISSING,
                },
            },
            {
                "__typename": "Item",
                "id": "i2",
                "weight": 1,
                "label": by_arg("t", soft="i2 (soft)"),
                "count": {"__args": {repr([("ts", ["c"])]): 1}, "default": MISSING},
            },
        ),
        {"things": [ref("Box", "box"), ref("Bag", "bag")],
         "any": [ref("Box", "box"), ref("Bag", "bag")]},
        [
            (
                "ctx_set_on_interface",
                "{ things { id ... on Box { items { label weight } } "
                "... on Bag { items { label } } } }",
            ),
            (
                "ctx_set_on_union_list_value",
                "{ any { ... on Box { items { count } } ... on Bag { items { id count } } } }",
            ),
        ],
    ),
    {
        "ctx_set_on_interface": {
            "things": [
                {"id": "box", "items": [{"label": "i1 (fragile)", "weight": 7}]},
                {"id": "bag", "items": [{"label": "i1 (soft)"}, {"label": "i2 (soft)"}]},
            ]
        },
        "ctx_set_on_union_list_value": {
            "any": [
                {"items": [{"count": 2}]},
                {"items": [{"id": "i1", "count": 1}, {"id": "i2", "count": 1}]},
            ]
        },
    },
)

# The contextual field's parent list comes from a third subgraph: the context is set in one
# fetch, the list comes from another, and the field's entity fetch goes back to the first.
# Two contextual arguments of one context, one of them a key field.
_case(
    Case(
        "ctx_across_three_subgraphs",
        {
            "users": LINK28
            + """
type Query { me: User }
type User @key(fields: "id") @context(name: "u") { id: ID! locale: String }
type Transaction @key(fields: "id") {
  id: ID!
  note(loc: String @fromContext(field: "$u { locale }")): String
  owner(uid: ID @fromContext(field: "$u { id }")): String
}
""",
            "ledger": LINK28
            + """
type User @key(fields: "id") { id: ID! transactions: [Transaction!]! }
type Transaction @key(fields: "id") { id: ID! amount: Int }
""",
        },
        _objs(
            {
                "__typename": "User",
                "id": "u1",
                "locale": "fr",
                "transactions": [ref("Transaction", "t1"), ref("Transaction", "t2")],
            },
            {
                "__typename": "Transaction",
                "id": "t1",
                "amount": 3,
                "note": by_arg("loc", fr="trois"),
                "owner": by_arg("uid", u1="owned by u1"),
            },
            {
                "__typename": "Transaction",
                "id": "t2",
                "amount": 4,
                "note": by_arg("loc", fr="quatre"),
                "owner": by_arg("uid", u1="owned by u1"),
            },
        ),
        {"me": ref("User", "u1")},
        [
            ("ctx_parent_list_from_third", "{ me { transactions { amount note } } }"),
            ("ctx_two_arguments_one_key", "{ me { transactions { note owner } } }"),
            ("ctx_key_field_only", "{ me { locale transactions { id owner } } }"),
        ],
    ),
    {
        "ctx_parent_list_from_third": {
            "me": {"transactions": [{"amount": 3, "note": "trois"}, {"amount": 4, "note": "quatre"}]}
        },
        "ctx_two_arguments_one_key": {
            "me": {
                "transactions": [
                    {"note": "trois", "owner": "owned by u1"},
                    {"note": "quatre", "owner": "owned by u1"},
                ]
            }
        },
        "ctx_key_field_only": {
            "me": {
                "locale": "fr",
                "transactions": [
                    {"id": "t1", "owner": "owned by u1"},
                    {"id": "t2", "owner": "owned by u1"},
                ],
            }
        },
    },
)

CONTEXT_OPS = [
    (case.name, op[0], op[1], op[2] if len(op) > 2 else None, expected[op[0]])
    for case, expected in CONTEXT_CASES
    for op in case.operations
]
