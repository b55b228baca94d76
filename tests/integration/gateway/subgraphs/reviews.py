"""Reviews subgraph: extends User and Product, @requires, @provides, @external, null propagation."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

REVIEWS = [
    {"id": "r1", "body": "Solid", "author": "1", "upc": "p1", "stars": 5},
    {"id": "r2", "body": "Meh", "author": "2", "upc": "p1", "stars": 2},
    {"id": "r3", "body": "Tasty", "author": "1", "upc": "p2", "stars": 4},
    {"id": "r4", "body": None, "author": "3", "upc": "p3", "stars": 1},
]
KEYS = {"p1": ("S1", "red"), "p2": ("S2", "blue"), "p3": ("S1", "green")}


@strawberry.federation.type(keys=["id"])
class User:
    id: strawberry.ID
    username: str = strawberry.federation.field(external=True)

    @strawberry.field
    def reviews(self) -> list[Review]:
        return [make_review(r) for r in REVIEWS if r["author"] == self.id]

    @classmethod
    def resolve_reference(cls, id: strawberry.ID) -> User:
        return User(id=id, username="")


@strawberry.federation.type(keys=["sku variant"])
class Product:
    sku: str
    variant: str
    name: str = strawberry.federation.field(shareable=True, default="")
    # -1: not sent by the gateway (the @requires contract was not honoured).
    price: int = strawberry.federation.field(external=True, default=-1)
    weight: int = strawberry.federation.field(external=True, default=-1)

    @strawberry.federation.field(requires=["price weight"])
    def shipping_estimate(self) -> int:
        assert self.price >= 0 and self.weight >= 0, "requires not honoured"
        return 0 if self.price > 15 else self.weight * 2

    @strawberry.field
    def reviews(self) -> list[Review]:
        upcs = [u for u, k in KEYS.items() if k == (self.sku, self.variant)]
        return [make_review(r) for r in REVIEWS if r["upc"] in upcs]

    @classmethod
    def resolve_reference(cls, sku: str, variant: str, price: int = -1,
                          weight: int = -1) -> Product:
        return Product(sku=sku, variant=variant, price=price, weight=weight)


@strawberry.federation.type(keys=["id"])
class Review:
    id: strawberry.ID
    body: str | None
    stars: int
    author_id: strawberry.Private[str]
    upc: strawberry.Private[str]

    @strawberry.federation.field(provides=["username"])
    def author(self) -> User:
        names = {"1": "ada", "2": "alan", "3": "grace"}
        return User(id=strawberry.ID(self.author_id), username=names[self.author_id])

    @strawberry.field
    def product(self) -> Product:
        sku, variant = KEYS[self.upc]
        p = Product(sku=sku, variant=variant)
        p.name = {"p1": "Hammer", "p2": "Bread", "p3": "Hammer XL"}[self.upc]
        return p

    @strawberry.field
    def strict_body(self) -> str:
        return self.body  # type: ignore[return-value]  # None for r4: the null propagates

    @strawberry.field
    def flaky(self) -> str | None:
        if self.id == "r2":
            raise GraphQLError("flaky failed", extensions={"code": "CONFLICT"})
        return "ok"

    @classmethod
    def resolve_reference(cls, id: strawberry.ID) -> Review | None:
        r = next((r for r in REVIEWS if r["id"] == id), None)
        return None if r is None else make_review(r)


def make_review(r: dict) -> Review:
    return Review(id=strawberry.ID(r["id"]), body=r["body"], stars=r["stars"],
                  author_id=r["author"], upc=r["upc"])


@strawberry.type
class Query:
    @strawberry.field
    def reviews(self) -> list[Review]:
        return [make_review(r) for r in REVIEWS]

    @strawberry.field
    def review(self, id: strawberry.ID) -> Review | None:
        r = next((r for r in REVIEWS if r["id"] == id), None)
        return None if r is None else make_review(r)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def add_review(self, upc: str, body: str, stars: int = 3) -> Review:
        if stars > 5:
            raise GraphQLError("too many stars", extensions={"code": "BAD_USER_INPUT"})
        # Not stored: tests share this data and must not see each other's writes.
        return make_review({"id": "new", "body": body, "author": "1", "upc": upc, "stars": stars})


schema = strawberry.federation.Schema(query=Query, mutation=Mutation, types=[User, Product, Review])
