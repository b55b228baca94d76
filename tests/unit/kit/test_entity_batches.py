"""SubgraphSchema resolves the `_entities` representations of a type with `resolve_references`
in one call (doorward_kit.entities): in their order, without __typename, each answer item in
its representation's place; junk representations keep their BAD_USER_INPUT in place; a batch
resolver that raises (or answers the wrong number of items) is an error on each of its
entities, like a raising resolve_reference; types without one resolve per representation as
before. `selects` is graphql-core's own field collection."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
import strawberry.federation

from doorward_kit.errors import forbidden
from doorward_kit.graphql import SubgraphSchema, schema_extensions

pytestmark = pytest.mark.unit

CALLS: list[tuple[str, list[dict[str, Any]]]] = []
MODE: dict[str, str] = {}
SELECTS: list[bool] = []


@strawberry.federation.type(keys=["id"])
class Batched:
    id: strawberry.ID
    note: str = ""

    @classmethod
    def resolve_reference(cls, info: strawberry.Info, id: strawberry.ID) -> Batched:
        raise AssertionError("a batched type is not resolved one by one")

    @classmethod
    async def resolve_references(
        cls, info: strawberry.Info, representations: list[dict[str, Any]]
    ) -> list[Any]:
        CALLS.append(("Batched", representations))
        mode = MODE.get("mode", "ok")
        if mode == "raise":
            raise forbidden("not you")
        if mode == "short":
            return []
        from doorward_kit.selection import Selected

        selected = Selected.on(info, "Batched")
        SELECTS.append(selected is not None and selected.asks("note"))
        note = "selected" if SELECTS[-1] else ""
        return [
            forbidden("not this one") if r["id"] == "no" else cls(id=r["id"], note=note)
            for r in representations
        ]


@strawberry.federation.type(keys=["id"])
class SyncBatched:
    id: strawberry.ID

    @classmethod
    def resolve_reference(cls, id: strawberry.ID) -> SyncBatched:
        raise AssertionError("a batched type is not resolved one by one")

    @classmethod
    def resolve_references(
        cls, info: strawberry.Info, representations: list[dict[str, Any]]
    ) -> list[Any]:
        CALLS.append(("SyncBatched", representations))
        return [cls(id=r["id"]) for r in representations]


@strawberry.federation.type(keys=["id"])
class Single:
    id: strawberry.ID

    @classmethod
    async def resolve_reference(cls, info: strawberry.Info, id: strawberry.ID) -> Single:
        CALLS.append(("Single", [{"id": id}]))
        return cls(id=id)


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"


SCHEMA = SubgraphSchema(
    query=Query, types=[Batched, SyncBatched, Single], extensions=schema_extensions()
)
ENTITIES = """query($r: [_Any!]!) { _entities(representations: $r) { __typename
  ... on Batched { id } ... on SyncBatched { id } ... on Single { id } } }"""


@pytest.fixture(autouse=True)
def _clean() -> Any:
    CALLS.clear()
    MODE.clear()
    SELECTS.clear()
    yield
    MODE.clear()


def rep(type_name: str, id: str) -> dict[str, str]:
    return {"__typename": type_name, "id": id}


async def entities(representations: list[Any], query: str = ENTITIES) -> Any:
    return await SCHEMA.execute(query, variable_values={"r": representations})


async def test_each_batched_type_is_one_call_in_order_and_answers_in_place():
    reps = [
        rep("Batched", "a"),
        rep("Single", "s1"),
        rep("SyncBatched", "x"),
        rep("Batched", "b"),
        {"__typename": "Batched"},  # junk: its error, in its place
        rep("SyncBatched", "y"),
        rep("Batched", "a"),
    ]
    result = await entities(reps)
    assert [e.path for e in result.errors] == [["_entities", 4]]
    assert result.errors[0].extensions["code"] == "BAD_USER_INPUT"
    assert result.data == {
        "_entities": [
            {"__typename": "Batched", "id": "a"},
            {"__typename": "Single", "id": "s1"},
            {"__typename": "SyncBatched", "id": "x"},
            {"__typename": "Batched", "id": "b"},
            None,
            {"__typename": "SyncBatched", "id": "y"},
            {"__typename": "Batched", "id": "a"},
        ]
    }
    assert sorted(CALLS) == [
        ("Batched", [{"id": "a"}, {"id": "b"}, {"id": "a"}]),
        ("Single", [{"id": "s1"}]),
        ("SyncBatched", [{"id": "x"}, {"id": "y"}]),
    ]
    # The batched representations are left as they came (strawberry pops a single one's).
    assert all(r.get("__typename") for r in reps if r is not reps[1])


async def test_an_error_item_is_that_entitys_error():
    result = await entities([rep("Batched", "a"), rep("Batched", "no"), rep("Batched", "c")])
    assert result.data["_entities"] == [
        {"__typename": "Batched", "id": "a"},
        None,
        {"__typename": "Batched", "id": "c"},
    ]
    assert [(e.path, e.extensions["code"]) for e in result.errors] == [
        (["_entities", 1], "FORBIDDEN")
    ]


@pytest.mark.parametrize(
    ("mode", "code"), [("raise", "FORBIDDEN"), ("short", "INTERNAL_SERVER_ERROR")]
)
async def test_a_failed_batch_is_an_error_on_each_of_its_entities(mode, code):
    MODE["mode"] = mode
    reps = [rep("Batched", "a"), rep("Single", "s"), rep("Batched", "b")]
    result = await entities(reps)
    assert result.data["_entities"] == [None, {"__typename": "Single", "id": "s"}, None]
    assert sorted((e.path, e.extensions["code"]) for e in result.errors) == [
        (["_entities", 0], code),
        (["_entities", 2], code),
    ]


@pytest.mark.parametrize(
    ("selection", "selected"),
    [
        ("... on Batched { note }", True),
        ("... on Batched { id }", False),
        ("...F", True),
        ("... on Batched { note @skip(if: true) }", False),
        ("... on Batched { n: note @include(if: true) }", True),
        ("... on Single { id }", False),
    ],
)
async def test_selects_is_what_graphql_core_collects(selection, selected):
    query = (
        f"query($r: [_Any!]!) {{ _entities(representations: $r) {{ __typename {selection} }} }}"
        " fragment F on Batched { note }"
    )
    if "...F" not in selection:
        query = query.rsplit(" fragment", 1)[0]
    result = await entities([rep("Batched", "a")], query)
    assert result.errors is None, result.errors
    assert CALLS == [("Batched", [{"id": "a"}])]
    assert [selected] == SELECTS
