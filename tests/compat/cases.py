"""Small supergraphs from the Federation spec's examples, each with its operations.

Every case is (subgraph SDLs, the world they serve, operations). The subgraphs are
`datagraph.DataSubgraph`s; both gateways run Apollo's composition of them. An operation listed
in `SPEC_DIVERGENCES` is one where @apollo/gateway does not follow the spec: the test asserts
the spec's answer for it instead of Apollo's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.compat.datagraph import ref

LINK = ('extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: '
        '["@key", "@shareable", "@external", "@requires", "@provides", "@interfaceObject", '
        '"@override", "@inaccessible"])\n')


@dataclass
class Case:
    name: str
    subgraphs: dict[str, str]
    objects: dict[str, dict[str, Any]]
    roots: dict[str, Any]
    operations: list[tuple[str, str]] = field(default_factory=list)


def _objs(*items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{o['__typename']}:{o.get('id') or o.get('upc') or o.get('sku')}": o for o in items}


CASES: list[Case] = [
    Case(
        "interface_object",
        {
            "media": LINK + """
type Query { media: [Media] }
interface Media @key(fields: "id") { id: ID! title: String }
type Book implements Media @key(fields: "id") { id: ID! title: String pages: Int }
type Movie implements Media @key(fields: "id") { id: ID! title: String minutes: Int }
""",
            "ratings": LINK + """
type Query { featured: Media topRated: [Media] }
type Media @key(fields: "id") @interfaceObject { id: ID! rating: Int }
""",
        },
        _objs({"__typename": "Book", "__interfaces": ["Media"], "id": "b1", "title": "Dune",
               "pages": 412, "rating": 5},
              {"__typename": "Movie", "__interfaces": ["Media"], "id": "m1", "title": "Heat",
               "minutes": 170, "rating": 4}),
        {"media": [ref("Book", "b1"), ref("Movie", "m1")], "featured": ref("Movie", "m1"),
         "topRated": [ref("Book", "b1"), ref("Movie", "m1")]},
        [
            ("io_fields_from_stand_in", "{ media { id title rating } }"),
            ("io_typename_on_owner_side", "{ media { __typename rating } }"),
            ("io_stand_in_root_then_owner", "{ featured { id rating title } }"),
            ("io_typename_through_owner", "{ featured { __typename id } }"),
            ("io_concrete_fragment_through_owner",
             "{ featured { rating ... on Movie { minutes } ... on Book { pages } } }"),
            ("io_list_through_owner", "{ topRated { __typename title rating } }"),
        ],
    ),
    Case(
        "shared_root_fields",
        {
            "catalog": LINK + """
type Query { product(id: ID!): Product @shareable }
type Product @key(fields: "id") { id: ID! name: String @shareable }
""",
            "pricing": LINK + """
type Query { product(id: ID!): Product @shareable }
type Product @key(fields: "id") { id: ID! name: String @shareable price: Int }
""",
            "stock": LINK + """
type Product @key(fields: "id") { id: ID! inStock: Boolean }
""",
        },
        _objs({"__typename": "Product", "id": "p1", "name": "Lamp", "price": 30,
               "inStock": True}),
        {"product": ref("Product", "p1")},
        [
            ("shared_root_one_subgraph", '{ product(id: "p1") { id name } }'),
            ("shared_root_prefers_the_one_with_more", '{ product(id: "p1") { name price } }'),
            ("shared_root_then_key", '{ product(id: "p1") { price inStock } }'),
        ],
    ),
    Case(
        "null_keys",
        {
            "a": LINK + """
type Query { items: [Item] }
type Item @key(fields: "id") { id: ID label: String }
""",
            "b": LINK + """
type Item @key(fields: "id") { id: ID extra: String }
""",
        },
        _objs({"__typename": "Item", "id": "i1", "label": "one", "extra": "x1"},
              {"__typename": "Item", "id": None, "label": "none", "extra": "never"}),
        {"items": [ref("Item", "i1"), ref("Item", "None")]},
        [
            ("null_key_not_sent", "{ items { label extra } }"),
            ("null_key_with_key_field", "{ items { id extra } }"),
        ],
    ),
    Case(
        "several_keys",
        {
            "a": LINK + """
type Query { things: [Thing] }
type Thing @key(fields: "id") { id: ID! sku: String! @shareable }
""",
            "b": LINK + """
type Thing @key(fields: "id") @key(fields: "sku", resolvable: false) {
  id: ID! sku: String! @shareable
}
""",
            "c": LINK + """
type Thing @key(fields: "sku") { sku: String! @shareable color: String }
""",
        },
        _objs({"__typename": "Thing", "id": "t1", "sku": "S1", "color": "red"}),
        {"things": [ref("Thing", "t1")]},
        [
            ("key_chain_through_resolvable_key", "{ things { id color } }"),
        ],
    ),
    Case(
        "requires",
        {
            "products": LINK + """
type Query { parcels: [Parcel] }
type Parcel @key(fields: "id") { id: ID! weight: Int size: Size }
type Size @shareable { w: Int h: Int }
""",
            "shipping": LINK + """
type Parcel @key(fields: "id") {
  id: ID!
  weight: Int @external
  size: Size @external
  cost: Int @requires(fields: "weight size { w h }")
  label: String @requires(fields: "weight")
}
type Size @shareable { w: Int h: Int }
""",
        },
        _objs({"__typename": "Parcel", "id": "x1", "weight": 3, "size": {"w": 1, "h": 2},
               "cost": 9, "label": "3kg"}),
        {"parcels": [ref("Parcel", "x1")]},
        [
            ("requires_nested_field_set", "{ parcels { cost } }"),
            ("requires_two_fields_one_fetch", "{ parcels { id cost label } }"),
            ("requires_with_client_alias", "{ parcels { weight: label w2: weight } }"),
        ],
    ),
    Case(
        "provides_abstract",
        {
            "feed": LINK + """
type Query { feed: [Post] }
type Post @key(fields: "id") { id: ID! author: Author @provides(fields: "name") }
type Author @key(fields: "id") { id: ID! name: String @external }
""",
            "people": LINK + """
type Author @key(fields: "id") { id: ID! name: String @shareable bio: String }
""",
        },
        _objs({"__typename": "Post", "id": "po1", "author": ref("Author", "au1")},
              {"__typename": "Author", "id": "au1", "name": "Ann", "bio": "hi"}),
        {"feed": [ref("Post", "po1")]},
        [
            ("provides_avoids_jump", "{ feed { author { name } } }"),
            ("provides_then_jump", "{ feed { author { name bio } } }"),
        ],
    ),
]
