"""SubgraphSchema checks `_entities` representations before strawberry indexes them: junk is
BAD_USER_INPUT naming the representation, never INTERNAL_SERVER_ERROR (found by tests/fuzz)."""

from __future__ import annotations

import pytest
import strawberry
import strawberry.federation

from doorward_kit.graphql import SubgraphSchema, schema_extensions

pytestmark = pytest.mark.unit


@strawberry.federation.type(keys=["id"])
class Thing:
    id: strawberry.ID

    @classmethod
    def resolve_reference(cls, info: strawberry.Info, id: strawberry.ID) -> Thing:
        return Thing(id=id)


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"


SCHEMA = SubgraphSchema(query=Query, types=[Thing], extensions=schema_extensions())
ENTITIES = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Thing { id } } }"


async def entities(representations):
    return await SCHEMA.execute(ENTITIES, variable_values={"r": representations})


@pytest.mark.parametrize(
    "junk",
    [
        {},
        "Thing",
        7,
        {"id": "1"},
        {"__typename": "Nope", "id": "1"},
        {"__typename": "Query", "id": "1"},
        {"__typename": 3, "id": "1"},
        {"__typename": "Thing"},
        {"__typename": "Thing", "id": "1", "junk": "x"},
        {"__typename": "Thing", "id": {"a": 1}},
        {"__typename": "Thing", "id": ["1"]},
    ],
)
async def test_a_junk_representation_is_bad_input(junk):
    result = await entities([{"__typename": "Thing", "id": "ok"}, junk])
    codes = [e.extensions["code"] for e in result.errors or []]
    assert codes == ["BAD_USER_INPUT"], result.errors
    assert "representations[1]" in result.errors[0].message


async def test_good_representations_still_resolve():
    result = await entities(
        [{"__typename": "Thing", "id": "a"}, {"__typename": "Thing", "id": "b"}]
    )
    assert result.errors is None
    assert result.data == {"_entities": [{"id": "a"}, {"id": "b"}]}


async def test_a_cached_document_is_validated_and_answered_like_a_new_one():
    # Parsing and validation are cached per document text: the same answer every time, and a
    # document that fails validation fails every time.
    for _ in range(3):
        ok = await SCHEMA.execute("{ hello }")
        assert ok.errors is None and ok.data == {"hello": "hi"}
        bad = await SCHEMA.execute("{ hello nope }")
        assert bad.errors and bad.data is None


def test_the_router_answers_json_encoded_by_orjson_with_text_intact():
    # The subgraph router encodes with orjson: the same JSON a client parses, UTF-8 text kept.
    import json

    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from doorward_kit.auth import NoSessionGuard, StaticJwksSource, TokenVerifier
    from doorward_kit.graphql import GatewayGate, subgraph_router

    @strawberry.type
    class Words:
        @strawberry.field
        def greeting(self) -> str:
            return "Grüße, «Zoë» \u2028 done"

    app = FastAPI()
    verifier = TokenVerifier(StaticJwksSource({"keys": []}), NoSessionGuard())
    router = subgraph_router(
        SubgraphSchema(query=Words, extensions=schema_extensions()),
        verifier=verifier,
        services=None,
        gate=GatewayGate(None, allow_unsigned=True),
    )
    app.include_router(router, prefix="/graphql")
    answer = TestClient(app).post("/graphql", json={"query": "{ greeting }"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.content) == {"data": {"greeting": "Grüße, «Zoë» \u2028 done"}}
