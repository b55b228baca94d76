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

LINK = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: '
    '["@key", "@shareable", "@external", "@requires", "@provides", "@interfaceObject", '
    '"@override", "@inaccessible"])\n'
)


@dataclass
class Case:
    name: str
    subgraphs: dict[str, str]
    objects: dict[str, dict[str, Any]]
    roots: dict[str, Any]
    # (name, query) or (name, query, variables)
    operations: list[tuple[Any, ...]] = field(default_factory=list)


# Operations whose `data` is rightly null (a non-null error reaches the root).
NULL_DATA = {"nonnull_root_bubbles"}

# Operations where @apollo/gateway 2.14 does not follow the spec:
# (why, the spec's `data`, the spec's error paths).
SPEC_DIVERGENCES: dict[str, tuple[str, Any, list[Any]]] = {
    "null_key_not_sent": (
        "a representation whose key field is null identifies no entity: it is not sent to "
        "_entities (@apollo/gateway sends {id: null} and shows whatever the subgraph makes of "
        "it)",
        {"items": [{"label": "one", "extra": "x1"}, {"label": "none", "extra": None}]},
        [],
    ),
    "null_key_with_key_field": (
        "as null_key_not_sent",
        {"items": [{"id": "i1", "extra": "x1"}, {"id": None, "extra": None}]},
        [],
    ),
    "io_requires_in_fragment": (
        "the client asked `slug` of Books only; @apollo/gateway asks the @interfaceObject "
        "subgraph for `slug` of every Media (one selection on the interface), and the Song's "
        "representation, rightly without the Book-only required field, fails at a path the "
        "operation never selected (media.1.slug). Per runtime type, nothing unasked is fetched",
        {"media": [{"slug": "dune"}, {"plays": 7}]},
        [],
    ),
}


def _objs(*items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{o['__typename']}:{o.get('id') or o.get('upc') or o.get('sku')}": o for o in items}


CASES: list[Case] = [
    Case(
        "interface_object",
        {
            "media": LINK
            + """
type Query { media: [Media] }
interface Media @key(fields: "id") { id: ID! title: String }
type Book implements Media @key(fields: "id") { id: ID! title: String pages: Int }
type Movie implements Media @key(fields: "id") { id: ID! title: String minutes: Int }
""",
            "ratings": LINK
            + """
type Query { featured: Media topRated: [Media] }
type Media @key(fields: "id") @interfaceObject { id: ID! rating: Int }
""",
        },
        _objs(
            {
                "__typename": "Book",
                "__interfaces": ["Media"],
                "id": "b1",
                "title": "Dune",
                "pages": 412,
                "rating": 5,
            },
            {
                "__typename": "Movie",
                "__interfaces": ["Media"],
                "id": "m1",
                "title": "Heat",
                "minutes": 170,
                "rating": 4,
            },
        ),
        {
            "media": [ref("Book", "b1"), ref("Movie", "m1")],
            "featured": ref("Movie", "m1"),
            "topRated": [ref("Book", "b1"), ref("Movie", "m1")],
        },
        [
            ("io_fields_from_stand_in", "{ media { id title rating } }"),
            ("io_typename_on_owner_side", "{ media { __typename rating } }"),
            ("io_stand_in_root_then_owner", "{ featured { id rating title } }"),
            ("io_typename_through_owner", "{ featured { __typename id } }"),
            (
                "io_concrete_fragment_through_owner",
                "{ featured { rating ... on Movie { minutes } ... on Book { pages } } }",
            ),
            ("io_list_through_owner", "{ topRated { __typename title rating } }"),
        ],
    ),
    Case(
        "shared_root_fields",
        {
            "catalog": LINK
            + """
type Query { product(id: ID!): Product @shareable }
type Product @key(fields: "id") { id: ID! name: String @shareable }
""",
            "pricing": LINK
            + """
type Query { product(id: ID!): Product @shareable }
type Product @key(fields: "id") { id: ID! name: String @shareable price: Int }
""",
            "stock": LINK
            + """
type Product @key(fields: "id") { id: ID! inStock: Boolean }
""",
        },
        _objs({"__typename": "Product", "id": "p1", "name": "Lamp", "price": 30, "inStock": True}),
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
            "a": LINK
            + """
type Query { items: [Item] }
type Item @key(fields: "id") { id: ID label: String }
""",
            "b": LINK
            + """
type Item @key(fields: "id") { id: ID extra: String }
""",
        },
        _objs(
            {"__typename": "Item", "id": "i1", "label": "one", "extra": "x1"},
            {"__typename": "Item", "id": None, "label": "none", "extra": "never"},
        ),
        {"items": [ref("Item", "i1"), ref("Item", "None")]},
        [
            ("null_key_not_sent", "{ items { label extra } }"),
            ("null_key_with_key_field", "{ items { id extra } }"),
        ],
    ),
    Case(
        "several_keys",
        {
            "a": LINK
            + """
type Query { things: [Thing] }
type Thing @key(fields: "id") { id: ID! sku: String! @shareable }
""",
            "b": LINK
            + """
type Thing @key(fields: "id") @key(fields: "sku", resolvable: false) {
  id: ID! sku: String! @shareable
}
""",
            "c": LINK
            + """
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
            "products": LINK
            + """
type Query { parcels: [Parcel] }
type Parcel @key(fields: "id") { id: ID! weight: Int size: Size }
type Size @shareable { w: Int h: Int }
""",
            "shipping": LINK
            + """
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
        _objs(
            {
                "__typename": "Parcel",
                "id": "x1",
                "weight": 3,
                "size": {"w": 1, "h": 2},
                "cost": 9,
                "label": "3kg",
            }
        ),
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
            "feed": LINK
            + """
type Query { feed: [Post] }
type Post @key(fields: "id") { id: ID! author: Author @provides(fields: "name") }
type Author @key(fields: "id") { id: ID! name: String @external }
""",
            "people": LINK
            + """
type Author @key(fields: "id") { id: ID! name: String @shareable bio: String }
""",
        },
        _objs(
            {"__typename": "Post", "id": "po1", "author": ref("Author", "au1")},
            {"__typename": "Author", "id": "au1", "name": "Ann", "bio": "hi"},
        ),
        {"feed": [ref("Post", "po1")]},
        [
            ("provides_avoids_jump", "{ feed { author { name } } }"),
            ("provides_then_jump", "{ feed { author { name bio } } }"),
        ],
    ),
]


def _case(
    name: str,
    subgraphs: dict[str, str],
    objects: list[dict[str, Any]],
    roots: dict[str, Any],
    operations: list[tuple[Any, ...]],
) -> Case:
    return Case(
        name, {k: LINK + v for k, v in subgraphs.items()}, _objs(*objects), roots, operations
    )


CASES += [
    _case(
        "requires_with_arguments",
        {
            "prices": """
type Query { items: [Item] }
type Item @key(fields: "id") { id: ID! price(currency: String!): Int @shareable }
""",
            "shipping": """
type Item @key(fields: "id") {
  id: ID!
  price(currency: String!): Int @external
  cost: Int @requires(fields: "price(currency: \\"EUR\\")")
}
""",
        },
        [
            {
                "__typename": "Item",
                "id": "i1",
                "cost": 12,
                "price": {"__args": {"[('currency', 'EUR')]": 10, "[('currency', 'USD')]": 11}},
            }
        ],
        {"items": [ref("Item", "i1")]},
        [
            ("requires_args", "{ items { cost } }"),
            ("requires_args_client_asks_other_args", '{ items { price(currency: "USD") cost } }'),
            ("requires_args_client_asks_same_args", '{ items { price(currency: "EUR") cost } }'),
            ("requires_args_aliased", '{ items { eur: price(currency: "EUR") c: cost } }'),
        ],
    ),
    _case(
        "requires_with_fragments",
        {
            "shapes": """
type Query { boxes: [Box] }
type Box @key(fields: "id") { id: ID! shape: Shape }
interface Shape { name: String }
type Circle implements Shape @shareable { name: String radius: Int }
type Square implements Shape @shareable { name: String side: Int }
""",
            "area": """
type Box @key(fields: "id") {
  id: ID!
  shape: Shape @external
  area: Int @requires(fields: "shape { ... on Circle { radius } ... on Square { side } }")
}
interface Shape { name: String }
type Circle implements Shape @shareable { name: String @external radius: Int @external }
type Square implements Shape @shareable { name: String @external side: Int @external }
""",
        },
        [
            {
                "__typename": "Box",
                "id": "b1",
                "shape": {"__typename": "Circle", "name": "c", "radius": 2},
                "area": 12,
            },
            {
                "__typename": "Box",
                "id": "b2",
                "shape": {"__typename": "Square", "name": "s", "side": 3},
                "area": 9,
            },
        ],
        {"boxes": [ref("Box", "b1"), ref("Box", "b2")]},
        [
            ("requires_inline_fragments", "{ boxes { id area } }"),
            (
                "requires_fragments_and_client_fragments",
                "{ boxes { area shape { name ... on Circle { radius } } } }",
            ),
        ],
    ),
    _case(
        "requires_chain",
        {
            "a": """
type Query { ts: [T] }
type T @key(fields: "id") { id: ID! x: Int z: Int @external w: Int @requires(fields: "z") }
""",
            "b": """
type T @key(fields: "id") { id: ID! x: Int @external y: Int @requires(fields: "x") z: Int }
""",
        },
        [{"__typename": "T", "id": "t1", "x": 1, "y": 2, "z": 3, "w": 4}],
        {"ts": [ref("T", "t1")]},
        [
            ("requires_across_both_ways", "{ ts { y w } }"),
            ("requires_back_and_forth", "{ ts { id x y z w } }"),
        ],
    ),
    _case(
        "provides_on_union",
        {
            "feed": """
type Query { items: [Media] }
union Media = Book | Film
type Book @key(fields: "id") { id: ID! title: String @external }
type Film @key(fields: "id") { id: ID! }
extend type Query { picks: [Media] @provides(fields: "... on Book { title }") }
""",
            "catalog": """
type Book @key(fields: "id") { id: ID! title: String @shareable year: Int }
type Film @key(fields: "id") { id: ID! title: String @shareable }
""",
        },
        [
            {"__typename": "Book", "id": "b1", "title": "Emma", "year": 1815},
            {"__typename": "Film", "id": "f1", "title": "Alien"},
        ],
        {
            "items": [ref("Book", "b1"), ref("Film", "f1")],
            "picks": [ref("Book", "b1"), ref("Film", "f1")],
        },
        [
            ("provides_union_member", "{ picks { ... on Book { title } ... on Film { title } } }"),
            ("no_provides_union", "{ items { ... on Book { title year } ... on Film { id } } }"),
            ("union_typename_only", "{ items { __typename } }"),
        ],
    ),
    _case(
        "provides_on_interface",
        {
            "feed": """
type Query {
  stars: [Person] @provides(fields: "... on Actor { name } ... on Singer { name }")
}
interface Person { id: ID! name: String }
type Actor implements Person @key(fields: "id") { id: ID! name: String @external }
type Singer implements Person @key(fields: "id") { id: ID! name: String @external }
""",
            "people": """
type Actor @key(fields: "id") { id: ID! name: String @shareable films: Int }
type Singer @key(fields: "id") { id: ID! name: String @shareable songs: Int }
""",
        },
        [
            {"__typename": "Actor", "id": "a1", "name": "Bo", "films": 3},
            {"__typename": "Singer", "id": "s1", "name": "Cy", "songs": 9},
        ],
        {"stars": [ref("Actor", "a1"), ref("Singer", "s1")]},
        [
            ("provides_interface_field", "{ stars { name } }"),
            (
                "provides_interface_then_jump",
                "{ stars { name ... on Actor { films } ... on Singer { songs } } }",
            ),
        ],
    ),
    _case(
        "back_through_another_key",
        {
            "users": """
type Query { users: [User] }
type User @key(fields: "id") @key(fields: "email") { id: ID! email: String! name: String }
""",
            "mail": """
type User @key(fields: "email") { email: String! inbox: Int manager: User }
""",
        },
        [
            {
                "__typename": "User",
                "id": "u1",
                "email": "a@x",
                "name": "Ann",
                "inbox": 2,
                "manager": ref("User", "u2"),
            },
            {
                "__typename": "User",
                "id": "u2",
                "email": "b@x",
                "name": "Bob",
                "inbox": 0,
                "manager": None,
            },
        ],
        {"users": [ref("User", "u1")]},
        [
            ("jump_by_second_key", "{ users { inbox } }"),
            ("back_into_first_subgraph", "{ users { manager { name } } }"),
            ("back_and_forth", "{ users { name manager { inbox name } } }"),
        ],
    ),
    _case(
        "shareable_shape_mismatch",
        {
            "a": """
type Query { products: [Product] }
type Product @key(fields: "id") { id: ID! tags: [String!]! @shareable name: String }
""",
            "b": """
type Product @key(fields: "id") { id: ID! tags: [String] @shareable rank: Int }
""",
        },
        [{"__typename": "Product", "id": "p1", "tags": ["x", "y"], "name": "P", "rank": 1}],
        {"products": [ref("Product", "p1")]},
        [
            ("mismatch_from_root_subgraph", "{ products { tags name } }"),
            ("mismatch_with_jump", "{ products { tags rank } }"),
        ],
    ),
    _case(
        "union_intersection",
        {
            "a": """
type Query { results: [Result] }
union Result = Cat | Dog
type Cat @key(fields: "id") { id: ID! meow: String }
type Dog @key(fields: "id") { id: ID! bark: String }
""",
            "b": """
type Query { others: [Result] }
union Result = Dog | Fox
type Dog @key(fields: "id") { id: ID! age: Int }
type Fox @key(fields: "id") { id: ID! tail: Int }
""",
        },
        [
            {"__typename": "Cat", "id": "c1", "meow": "m"},
            {"__typename": "Dog", "id": "d1", "bark": "b", "age": 3},
            {"__typename": "Fox", "id": "f1", "tail": 1},
        ],
        {
            "results": [ref("Cat", "c1"), ref("Dog", "d1")],
            "others": [ref("Dog", "d1"), ref("Fox", "f1")],
        },
        [
            ("union_typename", "{ results { __typename } others { __typename } }"),
            (
                "union_member_in_other_subgraph",
                "{ results { ... on Dog { bark age } ... on Cat { meow } } }",
            ),
            (
                "union_partially_known",
                "{ others { ... on Dog { age bark } ... on Fox { tail } ... on Cat { meow } } }",
            ),
        ],
    ),
    _case(
        "interface_entity_keys",
        {
            "a": """
type Query { nodes: [Node] }
interface Node @key(fields: "id") { id: ID! }
type Page implements Node @key(fields: "id") { id: ID! url: String }
type Post implements Node @key(fields: "id") { id: ID! body: String }
""",
            "b": """
type Page @key(fields: "id") { id: ID! views: Int }
""",
        },
        [
            {"__typename": "Page", "id": "p1", "url": "/a", "views": 5},
            {"__typename": "Post", "id": "q1", "body": "hello"},
        ],
        {"nodes": [ref("Page", "p1"), ref("Post", "q1")]},
        [
            ("interface_typename", "{ nodes { __typename id } }"),
            ("interface_concrete_jump", "{ nodes { id ... on Page { url views } } }"),
            (
                "interface_fragment_spread",
                "{ nodes { ...N } } fragment N on Node { id ... on Post { body } }",
            ),
        ],
    ),
    _case(
        "entity_errors",
        {
            "a": """
type Query { things: [Thing] thing: Thing! }
type Thing @key(fields: "id") { id: ID! name: String }
""",
            "b": """
type Thing @key(fields: "id") { id: ID! risky: String safe: String sure: String! }
""",
        },
        [
            {
                "__typename": "Thing",
                "id": "t1",
                "name": "one",
                "risky": {"__error": "boom"},
                "safe": "ok",
                "sure": "s",
            },
            {
                "__typename": "Thing",
                "id": "t2",
                "name": "two",
                "risky": "fine",
                "safe": "ok2",
                "sure": {"__error": "nope"},
            },
        ],
        {"things": [ref("Thing", "t1"), ref("Thing", "t2")], "thing": ref("Thing", "t1")},
        [
            ("entity_field_error_path", "{ things { name risky safe } }"),
            ("entity_nonnull_error_bubbles", "{ things { id sure } }"),
            ("root_nonnull_entity_error", "{ thing { risky } }"),
        ],
    ),
    _case(
        "override_and_inaccessible",
        {
            "old": """
type Query { accounts: [Account] }
type Account @key(fields: "id") { id: ID! plan: String secret: String @inaccessible }
""",
            "new": """
type Account @key(fields: "id") { id: ID! plan: String @override(from: "old") tier: Int }
""",
        },
        [{"__typename": "Account", "id": "a1", "plan": "gold", "tier": 2, "secret": "s"}],
        {"accounts": [ref("Account", "a1")]},
        [
            ("override_moves_field", "{ accounts { id plan } }"),
            ("override_and_own_field", "{ accounts { plan tier } }"),
        ],
    ),
    _case(
        "compound_and_nested_keys",
        {
            "a": """
type Query { seats: [Seat] }
type Seat @key(fields: "row num venue { id }") { row: String! num: Int! venue: Venue! }
type Venue @key(fields: "id") { id: ID! name: String }
""",
            "b": """
type Seat @key(fields: "row num venue { id }") {
  row: String! num: Int! venue: Venue! price: Int
}
type Venue @key(fields: "id") { id: ID! }
""",
        },
        [
            {
                "__typename": "Seat",
                "id": "s1",
                "row": "A",
                "num": 1,
                "venue": ref("Venue", "v1"),
                "price": 50,
            },
            {
                "__typename": "Seat",
                "id": "s2",
                "row": "B",
                "num": 2,
                "venue": ref("Venue", "v1"),
                "price": 70,
            },
            {"__typename": "Venue", "id": "v1", "name": "Hall"},
        ],
        {"seats": [ref("Seat", "s1"), ref("Seat", "s2")]},
        [
            ("nested_key_jump", "{ seats { row price } }"),
            ("nested_key_with_venue", "{ seats { price venue { name } } }"),
        ],
    ),
]

_USERS = [
    {
        "__typename": "User",
        "id": f"u{i}",
        "name": f"User {i}",
        "email": f"u{i}@x",
        "age": 20 + i,
        "status": "ACTIVE" if i % 2 else "AWAY",
        "friends": [ref("User", f"u{(i % 3) + 1}")],
    }
    for i in (1, 2, 3)
]

CASES += [
    _case(
        "interface_object_requires",
        {
            "media": """
type Query { media: [Media] }
interface Media @key(fields: "id") { id: ID! title: String }
type Book implements Media @key(fields: "id") { id: ID! title: String }
type Song implements Media @key(fields: "id") { id: ID! title: String }
""",
            "stats": """
type Media @key(fields: "id") @interfaceObject {
  id: ID!
  title: String @external
  slug: String @requires(fields: "title")
  plays: Int
}
""",
        },
        [
            {
                "__typename": "Book",
                "__interfaces": ["Media"],
                "id": "b1",
                "title": "Dune",
                "slug": "dune",
                "plays": 3,
            },
            {
                "__typename": "Song",
                "__interfaces": ["Media"],
                "id": "s1",
                "title": "Halo",
                "slug": "halo",
                "plays": 7,
            },
        ],
        {"media": [ref("Book", "b1"), ref("Song", "s1")]},
        [
            ("io_requires_from_owner", "{ media { slug } }"),
            ("io_requires_and_plain", "{ media { id plays slug title } }"),
            ("io_requires_in_fragment", "{ media { ... on Book { slug } ... on Song { plays } } }"),
            ("io_typename_and_stand_in", "{ media { __typename plays } }"),
        ],
    ),
    _case(
        "interface_object_two_stand_ins",
        {
            "owner": """
type Query { items: [Item] }
interface Item @key(fields: "id") { id: ID! }
type Hat implements Item @key(fields: "id") { id: ID! size: Int }
type Cap implements Item @key(fields: "id") { id: ID! logo: String }
""",
            "price": """
type Query { cheapest: Item }
type Item @key(fields: "id") @interfaceObject { id: ID! price: Int }
""",
            "stock": """
type Item @key(fields: "id") @interfaceObject { id: ID! count: Int }
""",
        },
        [
            {
                "__typename": "Hat",
                "__interfaces": ["Item"],
                "id": "h1",
                "size": 7,
                "price": 20,
                "count": 2,
            },
            {
                "__typename": "Cap",
                "__interfaces": ["Item"],
                "id": "c1",
                "logo": "Z",
                "price": 9,
                "count": 0,
            },
        ],
        {"items": [ref("Hat", "h1"), ref("Cap", "c1")], "cheapest": ref("Cap", "c1")},
        [
            ("two_stand_ins_from_owner", "{ items { id price count } }"),
            ("stand_in_to_stand_in", "{ cheapest { price count } }"),
            ("stand_in_to_owner_fragment", "{ cheapest { count ... on Cap { logo } } }"),
            ("stand_in_typename", "{ cheapest { __typename } }"),
            (
                "owner_concrete_and_stand_ins",
                "{ items { ... on Hat { size price } ... on Cap { logo count } } }",
            ),
        ],
    ),
    _case(
        "interface_object_unresolvable_key",
        {
            "owner": """
type Query { assets: [Asset] }
interface Asset @key(fields: "id") { id: ID! name: String }
type Car implements Asset @key(fields: "id") { id: ID! name: String wheels: Int }
""",
            "tags": """
type Query { tagged: [Asset] }
type Asset @key(fields: "id", resolvable: false) @interfaceObject { id: ID! }
""",
        },
        [{"__typename": "Car", "__interfaces": ["Asset"], "id": "c1", "name": "Zoe", "wheels": 4}],
        {"assets": [ref("Car", "c1")], "tagged": [ref("Car", "c1")]},
        [
            ("unresolvable_stand_in_to_owner", "{ tagged { id name } }"),
            ("unresolvable_stand_in_typename", "{ tagged { __typename ... on Car { wheels } } }"),
            ("owner_only", "{ assets { name } }"),
        ],
    ),
    _case(
        "shared_root_three_ways",
        {
            "a": """
type Query { user(id: ID!): User @shareable users: [User] @shareable }
type User @key(fields: "id") { id: ID! name: String @shareable }
""",
            "b": """
type Query { user(id: ID!): User @shareable }
type User @key(fields: "id") { id: ID! name: String @shareable email: String }
""",
            "c": """
type Query { users: [User] @shareable }
type User @key(fields: "id") { id: ID! age: Int }
""",
        },
        _USERS,
        {"user": lambda id: ref("User", id), "users": [ref("User", "u1"), ref("User", "u2")]},
        [
            ("shared_user_name", '{ user(id: "u1") { name } }'),
            ("shared_user_email", '{ user(id: "u2") { email } }'),
            ("shared_user_email_age", '{ user(id: "u3") { name email age } }'),
            ("shared_users_age", "{ users { id age } }"),
            ("shared_users_all", "{ users { name email age } }"),
            ("shared_both_roots", '{ users { age } user(id: "u1") { email } }'),
        ],
    ),
    _case(
        "requires_on_interface_field",
        {
            "zoo": """
type Query { animals: [Animal] }
interface Animal { id: ID! legs: Int }
type Cat implements Animal @key(fields: "id") { id: ID! legs: Int }
type Bird implements Animal @key(fields: "id") { id: ID! legs: Int }
""",
            "vet": """
type Cat @key(fields: "id") { id: ID! legs: Int @external shoes: Int @requires(fields: "legs") }
type Bird @key(fields: "id") { id: ID! legs: Int @external shoes: Int @requires(fields: "legs") }
""",
        },
        [
            {"__typename": "Cat", "id": "c1", "legs": 4, "shoes": 4},
            {"__typename": "Bird", "id": "b1", "legs": 2, "shoes": 0},
        ],
        {"animals": [ref("Cat", "c1"), ref("Bird", "b1")]},
        [
            (
                "requires_per_implementation",
                "{ animals { ... on Cat { shoes } ... on Bird { shoes } } }",
            ),
            ("requires_with_interface_field", "{ animals { legs ... on Cat { shoes } } }"),
            ("interface_typename_only", "{ animals { __typename } }"),
        ],
    ),
    _case(
        "value_types",
        {
            "a": """
type Query { places: [Place] }
type Place @key(fields: "id") { id: ID! geo: Geo }
type Geo @shareable { lat: Float lng: Float }
""",
            "b": """
type Place @key(fields: "id") { id: ID! home: Geo }
type Geo @shareable { lat: Float lng: Float }
""",
        },
        [
            {
                "__typename": "Place",
                "id": "p1",
                "geo": {"lat": 1.5, "lng": 2.5},
                "home": {"lat": 3.0, "lng": 4.0},
            }
        ],
        {"places": [ref("Place", "p1")]},
        [
            ("value_type_local", "{ places { geo { lat lng } } }"),
            ("value_type_remote", "{ places { home { lat } } }"),
            ("value_type_both", "{ places { geo { lng } home { lng } } }"),
        ],
    ),
    _case(
        "deep_chain_four",
        {
            "s1": """
type Query { a: [A] }
type A @key(fields: "id") { id: ID! b: B }
type B @key(fields: "id") { id: ID! }
""",
            "s2": """
type B @key(fields: "id") { id: ID! c: C }
type C @key(fields: "id") { id: ID! }
""",
            "s3": """
type C @key(fields: "id") { id: ID! d: D }
type D @key(fields: "id") { id: ID! }
""",
            "s4": """
type D @key(fields: "id") { id: ID! name: String }
""",
        },
        [
            {"__typename": "A", "id": "a1", "b": ref("B", "b1")},
            {"__typename": "B", "id": "b1", "c": ref("C", "c1")},
            {"__typename": "C", "id": "c1", "d": ref("D", "d1")},
            {"__typename": "D", "id": "d1", "name": "deep"},
        ],
        {"a": [ref("A", "a1")]},
        [
            ("chain_two", "{ a { b { c { id } } } }"),
            ("chain_four", "{ a { id b { id c { id d { id name } } } } }"),
            ("chain_aliases", "{ x: a { y: b { z: c { w: d { n: name } } } } }"),
        ],
    ),
    _case(
        "mutations_across_subgraphs",
        {
            "accounts": """
type Query { me: User }
type Mutation { rename(name: String!): User }
type User @key(fields: "id") { id: ID! name: String }
""",
            "notes": """
type Mutation { addNote(text: String!): Note }
type Note @key(fields: "id") { id: ID! text: String author: User }
type User @key(fields: "id") { id: ID! notes: [Note] }
""",
        },
        [
            {"__typename": "User", "id": "u1", "name": "Ann", "notes": [ref("Note", "n1")]},
            {"__typename": "Note", "id": "n1", "text": "hi", "author": ref("User", "u1")},
        ],
        {
            "me": ref("User", "u1"),
            "rename": lambda name: ref("User", "u1"),
            "addNote": lambda text: ref("Note", "n1"),
        },
        [
            ("mutation_then_jump", 'mutation { rename(name: "Bo") { name notes { text } } }'),
            (
                "mutation_sequence",
                'mutation { a: addNote(text: "x") { id } b: rename(name: "C") { id } '
                'c: addNote(text: "y") { author { name } } }',
            ),
            ("query_after_mutation_types", "{ me { notes { author { name } } } }"),
        ],
    ),
    _case(
        "fed1_style_extends",
        {
            "base": """
type Query { books: [Book] }
type Book @key(fields: "isbn") { isbn: String! title: String }
""",
            "reviews": """
type Book @key(fields: "isbn") { isbn: String! stars: Int }
""",
        },
        [{"__typename": "Book", "id": "x", "isbn": "x", "title": "T", "stars": 4}],
        {"books": [ref("Book", "x")]},
        [
            ("string_key_jump", "{ books { title stars } }"),
            ("string_key_only_remote", "{ books { stars } }"),
        ],
    ),
]

_PEOPLE = """
type Query { people: [Person] person(id: ID!): Person }
type Person @key(fields: "id") { id: ID! name: String! nick: String }
"""
_PERSON_DATA = [
    {
        "__typename": "Person",
        "id": f"p{i}",
        "name": f"P{i}",
        "nick": None if i == 2 else f"n{i}",
        "score": i * 10,
        "level": i,
        "team": ref("Team", "t1" if i < 3 else "t2"),
        "tags": {"__args": {"[('first', 1)]": [f"tag{i}"]}, "default": [f"tag{i}", "all"]},
    }
    for i in (1, 2, 3)
]
_TEAMS = [
    {
        "__typename": "Team",
        "id": "t1",
        "title": "Red",
        "members": [ref("Person", "p1"), ref("Person", "p2")],
    },
    {"__typename": "Team", "id": "t2", "title": "Blue", "members": [ref("Person", "p3")]},
]
_PEOPLE_ROOTS = {
    "people": [ref("Person", f"p{i}") for i in (1, 2, 3)],
    "person": lambda id: ref("Person", id) if id in ("p1", "p2", "p3") else None,
}

CASES += [
    _case(
        "shared_root_value_type",
        {
            "a": "type Query { t: T @shareable } type T @shareable { id: ID! x: Int }",
            "b": "type Query { t: T @shareable } type T @shareable { id: ID! x: Int y: Int }",
        },
        [{"__typename": "T", "id": "t", "x": 1, "y": 2}],
        {"t": ref("T", "t")},
        [
            ("value_root_x", "{ t { x } }"),
            ("value_root_y_from_the_one_that_has_it", "{ t { y } }"),
            ("value_root_all", "{ t { id x y } }"),
        ],
    ),
    _case(
        "conditions_and_variables",
        {
            "people": _PEOPLE,
            "scores": """
type Person @key(fields: "id") { id: ID! score: Int tags(first: Int): [String] }
""",
        },
        _PERSON_DATA,
        _PEOPLE_ROOTS,
        [
            (
                "include_jump_true",
                "query($x: Boolean!) { people { name score @include(if: $x) } }",
                {"x": True},
            ),
            (
                "include_jump_false",
                "query($x: Boolean!) { people { name score @include(if: $x) } }",
                {"x": False},
            ),
            ("skip_jump", "query($x: Boolean!) { people { score @skip(if: $x) } }", {"x": True}),
            (
                "skip_root_field",
                'query($x: Boolean!) { people @skip(if: $x) { name } person(id: "p1") { nick } }',
                {"x": True},
            ),
            (
                "include_fragment_jump",
                "query($x: Boolean!) { people { ... on Person @include(if: $x) { score } name } }",
                {"x": True},
            ),
            ("variable_in_jump_args", "query($n: Int) { people { tags(first: $n) } }", {"n": 1}),
            (
                "variable_in_root_and_jump",
                "query($id: ID!, $n: Int) { person(id: $id) { name tags(first: $n) } }",
                {"id": "p3", "n": 1},
            ),
            ("literal_args_in_jump", "{ people { a: tags(first: 1) b: tags } }"),
            ("missing_root_entity", '{ person(id: "nope") { name score } }'),
            (
                "same_key_different_conditions",
                "query($x: Boolean!) { people { score @include(if: $x) s2: score } }",
                {"x": False},
            ),
        ],
    ),
    _case(
        "entities_in_lists_and_teams",
        {
            "people": _PEOPLE,
            "teams": """
type Query { teams: [Team] }
type Team @key(fields: "id") { id: ID! title: String members: [Person!]! }
type Person @key(fields: "id") { id: ID! team: Team level: Int }
""",
        },
        _PERSON_DATA + _TEAMS,
        {**_PEOPLE_ROOTS, "teams": [ref("Team", "t1"), ref("Team", "t2")]},
        [
            ("team_members_names", "{ teams { title members { name } } }"),
            ("people_team_titles", "{ people { name team { title } } }"),
            ("round_trip", "{ teams { members { team { members { nick } } } } }"),
            ("nullable_nick_in_list", "{ teams { members { nick level } } }"),
            ("typename_in_lists", "{ teams { __typename members { __typename id } } }"),
            ("aliases_same_field_twice", "{ teams { a: members { name } b: members { level } } }"),
            ("people_and_teams", "{ people { level } teams { id } }"),
            ("person_team_members", '{ person(id: "p1") { team { members { name level } } } }'),
        ],
    ),
    _case(
        "null_propagation",
        {
            "a": """
type Query { rows: [Row!] row: Row! maybeRows: [Row] }
type Row @key(fields: "id") { id: ID! label: String! }
""",
            "b": """
type Row @key(fields: "id") { id: ID! must: String! may: String cells: [Cell!]! }
type Cell { v: Int! }
""",
        },
        [
            {
                "__typename": "Row",
                "id": "r1",
                "label": "one",
                "must": "m",
                "may": None,
                "cells": [{"v": 1}, {"v": 2}],
            },
            {
                "__typename": "Row",
                "id": "r2",
                "label": "two",
                "must": None,
                "may": "x",
                "cells": [{"v": None}],
            },
        ],
        {
            "rows": [ref("Row", "r1"), ref("Row", "r2")],
            "row": ref("Row", "r2"),
            "maybeRows": [ref("Row", "r1"), ref("Row", "r2")],
        },
        [
            ("nonnull_entity_field_null_in_nonnull_list", "{ rows { id must } }"),
            ("nonnull_entity_field_null_in_nullable_list", "{ maybeRows { id must } }"),
            ("nonnull_root_bubbles", "{ row { label must } }"),
            ("nullable_is_fine", "{ maybeRows { may } }"),
            ("nonnull_leaf_in_value_list", "{ maybeRows { cells { v } } }"),
            ("nonnull_mixed_root", "{ maybeRows { label } row { may } }"),
        ],
    ),
    _case(
        "enums_and_scalars",
        {
            "a": """
scalar JSON
enum Color { RED GREEN BLUE }
type Query { paints: [Paint] }
type Paint @key(fields: "id") { id: ID! color: Color meta: JSON }
""",
            "b": """
enum Color { RED GREEN BLUE }
type Paint @key(fields: "id") { id: ID! fav: Color shade: Float }
""",
        },
        [
            {
                "__typename": "Paint",
                "id": "x1",
                "color": "RED",
                "meta": {"a": [1, 2]},
                "fav": "BLUE",
                "shade": 0.5,
            },
            {
                "__typename": "Paint",
                "id": "x2",
                "color": "GREEN",
                "meta": None,
                "fav": "RED",
                "shade": 1,
            },
        ],
        {"paints": [ref("Paint", "x1"), ref("Paint", "x2")]},
        [
            ("enum_local", "{ paints { color } }"),
            ("enum_remote", "{ paints { fav } }"),
            ("custom_scalar", "{ paints { meta } }"),
            ("float_remote", "{ paints { shade color } }"),
        ],
    ),
    _case(
        "interface_hierarchy",
        {
            "a": """
type Query { things: [Named] }
interface Named { name: String }
interface Living implements Named { name: String age: Int }
type Dog implements Living & Named @key(fields: "id") { id: ID! name: String age: Int }
type Rock implements Named @key(fields: "id") { id: ID! name: String }
""",
            "b": """
type Dog @key(fields: "id") { id: ID! owner: String }
type Rock @key(fields: "id") { id: ID! weight: Int }
""",
        },
        [
            {"__typename": "Dog", "id": "d1", "name": "Rex", "age": 3, "owner": "Ann"},
            {"__typename": "Rock", "id": "r1", "name": "Stone", "weight": 9},
        ],
        {"things": [ref("Dog", "d1"), ref("Rock", "r1")]},
        [
            ("hierarchy_names", "{ things { name } }"),
            ("hierarchy_sub_interface", "{ things { ... on Living { age } } }"),
            (
                "hierarchy_jumps",
                "{ things { ... on Dog { owner } ... on Rock { weight } __typename } }",
            ),
            (
                "hierarchy_named_fragments",
                "{ things { ...L ...R } } fragment L on Living { age ... on Dog { owner } } "
                "fragment R on Rock { weight name }",
            ),
        ],
    ),
    _case(
        "union_in_entity",
        {
            "a": """
type Query { orders: [Order] }
type Order @key(fields: "id") { id: ID! }
""",
            "b": """
type Order @key(fields: "id") { id: ID! payment: Payment }
union Payment = Card | Cash
type Card @key(fields: "id") { id: ID! last4: String }
type Cash { amount: Int }
""",
            "c": """
type Card @key(fields: "id") { id: ID! bank: String }
""",
        },
        [
            {"__typename": "Order", "id": "o1", "payment": ref("Card", "c1")},
            {"__typename": "Order", "id": "o2", "payment": {"__typename": "Cash", "amount": 5}},
            {"__typename": "Card", "id": "c1", "last4": "4242", "bank": "ZB"},
        ],
        {"orders": [ref("Order", "o1"), ref("Order", "o2")]},
        [
            (
                "entity_union_members",
                "{ orders { payment { ... on Card { last4 } ... on Cash { amount } } } }",
            ),
            ("entity_union_jump", "{ orders { id payment { ... on Card { bank last4 } } } }"),
            ("entity_union_typename", "{ orders { payment { __typename } } }"),
        ],
    ),
    _case(
        "provides_nested",
        {
            "posts": """
type Query { posts: [Post] }
type Post @key(fields: "id") {
  id: ID!
  author: User @provides(fields: "name address { city }")
}
type User @key(fields: "id") { id: ID! name: String @external address: Address @external }
type Address @shareable { city: String @external }
""",
            "users": """
type User @key(fields: "id") { id: ID! name: String @shareable address: Address @shareable }
type Address @shareable { city: String street: String }
""",
        },
        [
            {"__typename": "Post", "id": "x", "author": ref("User", "u")},
            {
                "__typename": "User",
                "id": "u",
                "name": "Uma",
                "address": {"city": "Oslo", "street": "Main"},
            },
        ],
        {"posts": [ref("Post", "x")]},
        [
            ("provides_nested_city", "{ posts { author { name address { city } } } }"),
            ("provides_nested_then_street", "{ posts { author { address { city street } } } }"),
            ("provides_nested_id_only", "{ posts { author { id } } }"),
        ],
    ),
    _case(
        "keys_per_subgraph",
        {
            "a": """
type Query { products: [Product] }
type Product @key(fields: "id") { id: ID! upc: String! @shareable }
""",
            "b": """
type Product @key(fields: "id") @key(fields: "upc") { id: ID! upc: String! @shareable
  name: String }
""",
            "c": """
type Product @key(fields: "upc") { upc: String! price: Int }
""",
            "d": """
type Product @key(fields: "upc") { upc: String! stock: Int }
""",
        },
        [{"__typename": "Product", "id": "p1", "upc": "U1", "name": "Pen", "price": 2, "stock": 8}],
        {"products": [ref("Product", "p1")]},
        [
            ("upc_key_direct", "{ products { price } }"),
            ("two_upc_subgraphs", "{ products { price stock } }"),
            ("all_four", "{ products { id upc name price stock } }"),
        ],
    ),
]

CASES += [
    _case(
        "deep_provides_and_requires",
        {
            "orders": """
type Query { orders: [Order] }
type Order @key(fields: "id") { id: ID! buyer: Buyer @provides(fields: "country") total: Int }
type Buyer @key(fields: "id") { id: ID! country: String @external }
""",
            "buyers": """
type Buyer @key(fields: "id") { id: ID! country: String @shareable name: String }
""",
            "tax": """
type Order @key(fields: "id") {
  id: ID!
  total: Int @external
  tax: Int @requires(fields: "total")
}
type Buyer @key(fields: "id") { id: ID! vatId: String }
""",
        },
        [
            {
                "__typename": "Order",
                "id": "o1",
                "buyer": ref("Buyer", "b1"),
                "total": 100,
                "tax": 21,
            },
            {"__typename": "Buyer", "id": "b1", "country": "NO", "name": "Bea", "vatId": "V1"},
        ],
        {"orders": [ref("Order", "o1")]},
        [
            ("provided_country", "{ orders { buyer { country } } }"),
            ("provided_and_jump", "{ orders { buyer { country name vatId } } }"),
            ("requires_and_provides", "{ orders { tax buyer { country } } }"),
            ("everything", "{ orders { id total tax buyer { id country name vatId } } }"),
        ],
    ),
    _case(
        "many_root_fields",
        {
            "a": """
type Query { one: Int two: String things: [Thing] thing(id: ID!): Thing }
type Thing @key(fields: "id") { id: ID! a: Int }
""",
            "b": """
type Query { three: Boolean four: [Int] }
type Thing @key(fields: "id") { id: ID! b: Int }
""",
            "c": """
type Query { five: Float }
type Thing @key(fields: "id") { id: ID! c: Int }
""",
        },
        [{"__typename": "Thing", "id": f"t{i}", "a": i, "b": i * 2, "c": i * 3} for i in (1, 2)],
        {
            "one": 1,
            "two": "2",
            "three": True,
            "four": [4, 4],
            "five": 5.5,
            "things": [ref("Thing", "t1"), ref("Thing", "t2")],
            "thing": lambda id: ref("Thing", id),
        },
        [
            ("roots_all_subgraphs", "{ one two three four five }"),
            ("roots_typename", "{ __typename one five }"),
            ("roots_aliases", "{ x: one y: one z: three }"),
            ("roots_and_entities", "{ five things { a b c } }"),
            ("root_twice_with_args", '{ p: thing(id: "t1") { b } q: thing(id: "t2") { c } }'),
            ("named_operation", "query Named { one things { c } }"),
            ("fragment_on_query", "{ ...Q } fragment Q on Query { one three }"),
        ],
    ),
    _case(
        "diamond",
        {
            "top": """
type Query { item: Item }
type Item @key(fields: "id") { id: ID! }
""",
            "left": """
type Item @key(fields: "id") { id: ID! left: Int sku: String! @shareable }
""",
            "right": """
type Item @key(fields: "id") { id: ID! right: Int sku: String! @shareable }
""",
            "bottom": """
type Item @key(fields: "sku") { sku: String! bottom: Int }
""",
        },
        [{"__typename": "Item", "id": "i1", "left": 1, "right": 2, "sku": "S", "bottom": 3}],
        {"item": ref("Item", "i1")},
        [
            ("diamond_sides", "{ item { left right } }"),
            ("diamond_bottom", "{ item { bottom } }"),
            ("diamond_all", "{ item { id left right sku bottom } }"),
        ],
    ),
    _case(
        "inaccessible_parts",
        {
            "a": """
type Query { docs: [Doc] }
type Doc @key(fields: "id") { id: ID! title: String internal: String @inaccessible
  kind: Kind }
enum Kind { PUBLIC SECRET @inaccessible }
""",
            "b": """
type Doc @key(fields: "id") { id: ID! pages: Int }
""",
        },
        [
            {
                "__typename": "Doc",
                "id": "d1",
                "title": "A",
                "internal": "x",
                "kind": "PUBLIC",
                "pages": 2,
            },
            {
                "__typename": "Doc",
                "id": "d2",
                "title": "B",
                "internal": "y",
                "kind": "SECRET",
                "pages": 3,
            },
        ],
        {"docs": [ref("Doc", "d1"), ref("Doc", "d2")]},
        [
            ("inaccessible_hidden", "{ docs { title pages } }"),
            ("inaccessible_enum_value_nulls", "{ docs { kind } }"),
        ],
    ),
    _case(
        "interface_object_root_and_nested",
        {
            "owner": """
type Query { feed: [Post] }
interface Post @key(fields: "id") { id: ID! body: String }
type Text implements Post @key(fields: "id") { id: ID! body: String words: Int }
type Photo implements Post @key(fields: "id") { id: ID! body: String pixels: Int }
""",
            "likes": """
type Query { top: [Post] }
type Post @key(fields: "id") @interfaceObject { id: ID! likes: Int fans: [Fan] }
type Fan { name: String }
""",
        },
        [
            {
                "__typename": "Text",
                "__interfaces": ["Post"],
                "id": "t1",
                "body": "hi",
                "words": 1,
                "likes": 3,
                "fans": [{"name": "a"}],
            },
            {
                "__typename": "Photo",
                "__interfaces": ["Post"],
                "id": "p1",
                "body": "pic",
                "pixels": 9,
                "likes": 5,
                "fans": [],
            },
        ],
        {
            "feed": [ref("Text", "t1"), ref("Photo", "p1")],
            "top": [ref("Photo", "p1"), ref("Text", "t1")],
        },
        [
            ("io_nested_value", "{ feed { likes fans { name } } }"),
            ("io_top_body", "{ top { id body likes } }"),
            ("io_top_concrete", "{ top { ... on Text { words } ... on Photo { pixels } } }"),
            (
                "io_top_everything",
                "{ top { __typename id body likes fans { name } ... on Text { words } } }",
            ),
            ("io_feed_everything", "{ feed { __typename body likes ... on Photo { pixels } } }"),
        ],
    ),
]

_MORE: dict[str, list[tuple[Any, ...]]] = {
    "interface_object": [
        ("io_alias_stand_in_field", "{ media { r: rating t: title } }"),
        ("io_featured_only_stand_in", "{ featured { rating } }"),
        ("io_named_fragment", "{ media { ...M } } fragment M on Media { id rating }"),
        (
            "io_top_rated_concrete",
            "{ topRated { ... on Book { pages } ... on Movie { minutes } rating } }",
        ),
    ],
    "shared_root_fields": [
        ("shared_root_typename", '{ product(id: "p1") { __typename id } }'),
        ("shared_root_aliases", '{ a: product(id: "p1") { name } b: product(id: "p1") { price } }'),
        ("shared_root_stock_only", '{ product(id: "p1") { inStock } }'),
    ],
    "requires": [
        ("requires_only_label", "{ parcels { label } }"),
        ("requires_with_size", "{ parcels { size { w } cost } }"),
        ("requires_typename", "{ parcels { __typename cost } }"),
    ],
    "provides_abstract": [
        ("provides_author_id_name", "{ feed { id author { id name } } }"),
        ("provides_bio_only", "{ feed { author { bio } } }"),
    ],
    "requires_with_arguments": [
        ("requires_args_two_costs", "{ items { a: cost b: cost } }"),
        (
            "requires_args_variable_price",
            "query($c: String!) { items { price(currency: $c) cost } }",
            {"c": "USD"},
        ),
    ],
    "requires_chain": [
        ("requires_only_w", "{ ts { w } }"),
        ("requires_only_y", "{ ts { y } }"),
        ("requires_chain_plain", "{ ts { x z } }"),
    ],
    "back_through_another_key": [
        ("manager_inbox", "{ users { manager { inbox } } }"),
        ("manager_chain", "{ users { manager { manager { name } } } }"),
        ("email_and_inbox", "{ users { email inbox } }"),
    ],
    "union_intersection": [
        ("union_fragment_spread", "{ results { ...D } } fragment D on Dog { bark age }"),
        ("union_aliases", "{ r: results { ... on Cat { m: meow } } }"),
    ],
    "interface_entity_keys": [
        ("interface_views_only", "{ nodes { ... on Page { views } } }"),
        (
            "interface_all",
            "{ nodes { __typename id ... on Page { url views } ... on Post { body } } }",
        ),
    ],
    "entity_errors": [
        ("entity_safe_only", "{ things { safe } }"),
        ("entity_error_aliased", "{ things { r: risky } }"),
    ],
    "override_and_inaccessible": [
        ("override_tier_only", "{ accounts { tier } }"),
        ("override_typename", "{ accounts { __typename plan } }"),
    ],
    "compound_and_nested_keys": [
        ("nested_key_fields_only", "{ seats { row num venue { id } } }"),
        ("nested_key_all", "{ seats { row num price venue { id name } } }"),
    ],
    "several_keys": [
        ("several_keys_sku_color", "{ things { sku color } }"),
        ("several_keys_color_only", "{ things { color } }"),
    ],
    "shareable_shape_mismatch": [
        ("mismatch_rank_only", "{ products { rank } }"),
        ("mismatch_all", "{ products { id tags name rank } }"),
    ],
    "provides_on_union": [
        ("union_book_year", "{ picks { ... on Book { year } } }"),
        ("union_picks_typename", "{ picks { __typename ... on Film { id } } }"),
    ],
    "provides_on_interface": [
        ("interface_provided_typename", "{ stars { __typename name } }"),
        ("interface_films_only", "{ stars { ... on Actor { films } } }"),
    ],
    "mutations_across_subgraphs": [
        ("mutation_note_author", 'mutation { addNote(text: "z") { text author { name } } }'),
        (
            "mutation_variables",
            "mutation($n: String!) { rename(name: $n) { id name } }",
            {"n": "Q"},
        ),
    ],
    "deep_chain_four": [
        (
            "chain_typenames",
            "{ a { __typename b { __typename c { __typename d { __typename } } } } }",
        ),
        ("chain_three", "{ a { b { c { d { id } } } } }"),
    ],
    "value_types": [
        ("value_typename", "{ places { geo { __typename lat } } }"),
    ],
    "null_keys": [
        ("null_keys_label_only", "{ items { label } }"),
    ],
    "fed1_style_extends": [
        ("string_key_all", "{ books { isbn title stars } }"),
    ],
    "interface_object_two_stand_ins": [
        ("two_stand_ins_one_each", "{ items { price } cheapest { count } }"),
    ],
    "shared_root_three_ways": [
        ("shared_user_missing", '{ user(id: "u9") { name age } }'),
    ],
}
for _c in CASES:
    _c.operations.extend(_MORE.get(_c.name, []))

_MORE2: dict[str, list[tuple[Any, ...]]] = {
    "conditions_and_variables": [
        ("include_literal_false", "{ people { name score @include(if: false) } }"),
        ("skip_literal_true_on_jump", "{ people { id score @skip(if: true) } }"),
        ("default_variable", "query($n: Int = 1) { people { tags(first: $n) } }"),
    ],
    "entities_in_lists_and_teams": [
        ("team_member_teams", "{ teams { members { team { title } } } }"),
        ("person_by_id_level", '{ person(id: "p2") { level nick } }'),
    ],
    "null_propagation": [
        ("rows_label_only", "{ rows { label } }"),
        ("rows_may", "{ rows { may } }"),
    ],
    "many_root_fields": [
        ("root_single_remote", "{ three }"),
        ("root_entity_remote_only", '{ thing(id: "t2") { b c } }'),
    ],
    "diamond": [
        ("diamond_left_bottom", "{ item { left bottom } }"),
    ],
    "keys_per_subgraph": [
        ("upc_stock_only", "{ products { stock } }"),
    ],
    "interface_hierarchy": [
        ("hierarchy_typename", "{ things { __typename } }"),
    ],
    "union_in_entity": [
        ("entity_union_cash_only", "{ orders { payment { ... on Cash { amount } } } }"),
    ],
}
for _c in CASES:
    _c.operations.extend(_MORE2.get(_c.name, []))

# Issue 12 families the corpus had fewest operations for: keys that come back partly null
# (compound keys with a null part), and @requires that go round three subgraphs.
CASES += [
    _case(
        "compound_null_keys",
        {
            "a": """
type Query { parcels: [Parcel] }
type Parcel @key(fields: "id owner { id }") { id: ID! owner: Owner weight: Int }
type Owner @shareable { id: ID }
""",
            "b": """
type Parcel @key(fields: "id owner { id }") { id: ID! owner: Owner label: String }
type Owner @shareable { id: ID }
""",
        },
        [
            {"__typename": "Parcel", "id": "p1", "owner": {"id": "o1"}, "weight": 1,
             "label": "L1"},
            {"__typename": "Parcel", "id": "p2", "owner": None, "weight": 2, "label": "L2"},
            {"__typename": "Parcel", "id": "p3", "owner": {"id": None}, "weight": 3,
             "label": "L3"},
        ],
        {"parcels": [ref("Parcel", "p1"), ref("Parcel", "p2"), ref("Parcel", "p3")]},
        [
            ("compound_key_part_null", "{ parcels { id weight label } }"),
            ("compound_key_fields_and_remote", "{ parcels { owner { id } label } }"),
            ("compound_key_local_only", "{ parcels { id owner { id } weight } }"),
        ],
    ),
    _case(
        "requires_round_three_subgraphs",
        {
            "a": """
type Query { ts: [T] }
type T @key(fields: "id") { id: ID! s: Int q: Int @external p: Int @requires(fields: "q") }
""",
            "b": """
type T @key(fields: "id") { id: ID! r: Int @external q: Int @requires(fields: "r") }
""",
            "c": """
type T @key(fields: "id") { id: ID! s: Int @external r: Int @requires(fields: "s") }
""",
        },
        [
            {"__typename": "T", "id": "t1", "s": 1, "r": 2, "q": 3, "p": 4},
            {"__typename": "T", "id": "t2", "s": 5, "r": 6, "q": 7, "p": 8},
        ],
        {"ts": [ref("T", "t1"), ref("T", "t2")]},
        [
            ("requires_round_p", "{ ts { p } }"),
            ("requires_round_all", "{ ts { id p q r s } }"),
            ("requires_round_middle", "{ ts { q } }"),
            ("requires_round_aliased", "{ ts { one: p two: r } }"),
        ],
    ),
]

SPEC_DIVERGENCES.update(
    {
        "compound_key_part_null": (
            "as null_key_not_sent, for a compound key: `owner` null or `owner.id` null leaves "
            "the key `id owner { id }` unfilled, so the representation identifies no entity "
            "and is not sent (@apollo/gateway sends it and shows what the subgraph makes of it)",
            {
                "parcels": [
                    {"id": "p1", "weight": 1, "label": "L1"},
                    {"id": "p2", "weight": 2, "label": None},
                    {"id": "p3", "weight": 3, "label": None},
                ]
            },
            [],
        ),
        "compound_key_fields_and_remote": (
            "as compound_key_part_null",
            {
                "parcels": [
                    {"owner": {"id": "o1"}, "label": "L1"},
                    {"owner": None, "label": None},
                    {"owner": {"id": None}, "label": None},
                ]
            },
            [],
        ),
    }
)
