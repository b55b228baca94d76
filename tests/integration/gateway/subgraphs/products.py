"""Products subgraph: multiple and compound keys, interfaces, unions, enums, a slow field."""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Annotated

import strawberry
from graphql import GraphQLError


@strawberry.enum
class Category(Enum):
    TOOLS = "TOOLS"
    FOOD = "FOOD"


PRODUCTS = {
    "p1": {"sku": "S1", "variant": "red", "name": "Hammer", "price": 10, "weight": 3,
           "category": Category.TOOLS},
    "p2": {"sku": "S2", "variant": "blue", "name": "Bread", "price": 3, "weight": 1,
           "category": Category.FOOD},
    "p3": {"sku": "S1", "variant": "green", "name": "Hammer XL", "price": 20, "weight": 6,
           "category": Category.TOOLS},
}


@strawberry.federation.type(keys=["upc", "sku variant"])
class Product:
    upc: strawberry.ID
    sku: str
    variant: str
    name: str = strawberry.federation.field(shareable=True)
    price: int
    weight: int
    category: Category

    @strawberry.field
    def price_error(self) -> int | None:
        if self.upc == "p2":
            raise GraphQLError("no price", extensions={"code": "NOT_FOUND"})
        return self.price

    @classmethod
    def resolve_reference(cls, upc: strawberry.ID | None = None, sku: str | None = None,
                          variant: str | None = None) -> Product | None:
        if upc is not None:
            return make_product(upc)
        for pid, p in PRODUCTS.items():
            if p["sku"] == sku and p["variant"] == variant:
                return make_product(pid)
        return None


def make_product(upc: str) -> Product | None:
    p = PRODUCTS.get(upc)
    return None if p is None else Product(upc=strawberry.ID(upc), **p)  # type: ignore[arg-type]


@strawberry.interface
class Media:
    id: strawberry.ID
    title: str


@strawberry.type
class Book(Media):
    pages: int


@strawberry.type
class Movie(Media):
    minutes: int


SearchResult = Annotated[Product | Book, strawberry.union("SearchResult")]


@strawberry.input
class ProductFilter:
    category: Category | None = None
    max_price: int | None = None


@strawberry.type
class Query:
    @strawberry.field
    def top_products(self, first: int = 5, filter: ProductFilter | None = None) -> list[Product]:
        out = [p for pid in PRODUCTS if (p := make_product(pid)) is not None]
        if filter is not None:
            if filter.category is not None:
                out = [p for p in out if p.category == filter.category]
            if filter.max_price is not None:
                out = [p for p in out if p.price <= filter.max_price]
        return out[:first]

    @strawberry.field
    def product(self, upc: strawberry.ID) -> Product | None:
        return make_product(upc)

    @strawberry.field
    def media(self) -> list[Media]:
        return [Book(id=strawberry.ID("m1"), title="Dune", pages=412),
                Movie(id=strawberry.ID("m2"), title="Alien", minutes=117)]

    @strawberry.field
    def search(self, term: str) -> list[SearchResult]:
        out: list[Product | Book] = [p for pid in PRODUCTS if (p := make_product(pid))
                                     and term.lower() in p.name.lower()]
        if "dune".startswith(term.lower()) or term == "":
            out.append(Book(id=strawberry.ID("m1"), title="Dune", pages=412))
        return out

    @strawberry.field
    async def slow(self, ms: int = 2000) -> str | None:
        await asyncio.sleep(ms / 1000)
        return "finally"


@strawberry.type
class Mutation:
    @strawberry.mutation
    def set_price(self, upc: strawberry.ID, price: int) -> Product | None:
        if upc in PRODUCTS:
            PRODUCTS[upc]["price"] = price
        return make_product(upc)


schema = strawberry.federation.Schema(query=Query, mutation=Mutation, types=[Book, Movie])
