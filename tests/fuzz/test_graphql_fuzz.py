"""hypothesis-graphql against the gateway's public schema and against each subgraph called
directly, with a real token of every role and arbitrary argument values (NUL, bidi controls,
any code point, huge and negative numbers, wrong types in NEGATIVE mode). See conftest.py for
the properties and the budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import graphql
import httpx
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st
from hypothesis_graphql import Mode, mutations, nodes, queries

from gateway.composition import Supergraph
from gateway.composition import compose as compose_supergraph
from gateway.server import fetch_sdls
from tests.fixtures.gateway_signing import signed_as_gateway, stack_gateway_key
from tests.fuzz.conftest import (
    ALLOWED_GRAPHQL,
    FUZZ_SETTINGS,
    ROLES,
    SEED,
    FuzzWorld,
    Oracle,
    post_graphql,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

SUBGRAPHS = ("identity", "workorders", "audit")
# Mutations the fuzzer leaves out: `logout` would end the fuzzing actor's own session and
# turn every later example into UNAUTHENTICATED (it is exercised by the e2e tests).
SKIPPED_MUTATIONS = frozenset({"logout"})

# Tricky strings every text argument may get besides hypothesis' own.
TRICKY = [
    "ab\u0000cd",
    "Zone \u202e evil",
    "\u2066x\u2069",
    "\u0085",
    "\x7f",
    "\ud7ff\ue000\uffff",
    "a" * 5000,
    "",
    " ",
    "' OR 1=1 --",
    "../../etc/passwd",
    "%00",
    "00000000-0000-0000-0000-000000000000",
    "\U0001f600",
]


def _text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(TRICKY), st.text(max_size=40))


def _datetime_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.datetimes(timezones=st.timezones() | st.just(None)).map(lambda d: d.isoformat()),
        st.sampled_from(
            [
                "2026-13-45T99:99:99Z",
                "9999-12-31T23:59:59+14:00",
                "0001-01-01T00:00:00+00:00",
                "yesterday",
                "2026-01-01T00:00:00",
            ]
        ),
        _text(),
    )


def _date_values() -> st.SearchStrategy[str]:
    return st.one_of(st.dates().map(str), st.sampled_from(["2026-02-30", "0000-00-00"]), _text())


def _representations(types: list[str]) -> st.SearchStrategy[graphql.ValueNode]:
    """`_Any` values for `_entities`: an entity type (or junk) with an arbitrary id."""
    field = st.builds(
        lambda k, v: graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v),
        st.sampled_from(["__typename", "id", "number", "junk"]),
        _text().map(nodes.String),
    )
    typename = st.sampled_from([*types, "Nope", ""]).map(
        lambda t: graphql.ObjectFieldNode(
            name=graphql.NameNode(value="__typename"), value=nodes.String(t)
        )
    )
    ident = _text().map(
        lambda v: graphql.ObjectFieldNode(name=graphql.NameNode(value="id"), value=nodes.String(v))
    )
    return st.one_of(
        st.tuples(typename, ident).map(lambda f: nodes.Object(list(f))),
        st.lists(field, max_size=3).map(nodes.Object),
        _text().map(nodes.String),
    )


def custom_scalars(
    schema: graphql.GraphQLSchema,
) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    found: dict[str, st.SearchStrategy[graphql.ValueNode]] = {}
    entity = schema.type_map.get("_Entity")
    entity_types = (
        [t.name for t in entity.types] if isinstance(entity, graphql.GraphQLUnionType) else []
    )
    for name, type_ in schema.type_map.items():
        if not isinstance(type_, graphql.GraphQLScalarType) or name.startswith("__"):
            continue
        if name in ("String", "ID", "Int", "Float", "Boolean"):
            continue
        if name == "DateTime":
            found[name] = _datetime_values().map(nodes.String)
        elif name == "Date":
            found[name] = _date_values().map(nodes.String)
        elif name == "_Any":
            found[name] = _representations(entity_types)
        else:
            found[name] = _text().map(nodes.String)
    return found


def _schema_of_subgraph(client: httpx.Client, url: str) -> graphql.GraphQLSchema:
    body = client.post(url, json={"query": graphql.get_introspection_query()}).json()
    return graphql.build_client_schema(body["data"])


@pytest.fixture(scope="module")
def schemas(fuzz_world: FuzzWorld) -> dict[str, tuple[str, graphql.GraphQLSchema]]:
    """{surface: (url, schema)}: the gateway's public (API) schema composed from the running
    subgraphs, and each subgraph's own schema (with _entities/_service) by introspection."""
    stack = fuzz_world.stack
    urls = {svc: f"{stack.http_url(svc)}/graphql" for svc in SUBGRAPHS}

    # Subgraphs answer only requests signed as the gateway's (tests/fixtures/gateway_signing.py).
    auth = signed_as_gateway(key_file=stack_gateway_key(stack.data_dir))

    async def sdls() -> dict[str, tuple[str, str]]:
        async with httpx.AsyncClient(auth=auth) as client:
            return await fetch_sdls(client, urls, 10.0)

    supergraph = Supergraph.from_sdl(compose_supergraph(asyncio.run(sdls())))
    out = {"gateway": (stack.gateway_url, supergraph.api_schema)}
    with httpx.Client(timeout=30, auth=auth) as client:
        for svc, url in urls.items():
            out[svc] = (url, _schema_of_subgraph(client, url))
    return out


def _strategy(schema: graphql.GraphQLSchema, kind: str, mode: Mode) -> st.SearchStrategy[str]:
    scalars = custom_scalars(schema)
    if kind == "query":
        return queries(schema, custom_scalars=scalars, mode=mode)
    assert schema.mutation_type is not None
    fields = [f for f in schema.mutation_type.fields if f not in SKIPPED_MUTATIONS]
    return mutations(schema, fields=fields, custom_scalars=scalars, mode=mode)


def _fuzz(
    fw: FuzzWorld,
    client: httpx.Client,
    surface: str,
    url: str,
    role: str,
    strategy: st.SearchStrategy[str],
) -> Callable[[], None]:
    oracle = Oracle(fw, ALLOWED_GRAPHQL)

    @seed(SEED)
    @FUZZ_SETTINGS
    @given(document=strategy)
    def run(document: str) -> None:
        response, elapsed = post_graphql(client, url, {"query": document}, fw.headers(role))
        oracle.check(surface, role, response, elapsed, document)

    return run


@pytest.mark.parametrize("mode", [Mode.POSITIVE, Mode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("kind", ["query", "mutation"])
@pytest.mark.parametrize("role", ROLES)
def test_the_gateway_keeps_the_properties_for_any_operation(
    fuzz_world, http_client, schemas, role, kind, mode
):
    url, schema = schemas["gateway"]
    _fuzz(fuzz_world, http_client, "gateway", url, role, _strategy(schema, kind, mode))()


@pytest.mark.parametrize("kind", ["query", "mutation"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("subgraph", SUBGRAPHS)
def test_each_subgraph_called_directly_keeps_the_properties(
    fuzz_world, http_client, schemas, subgraph, role, kind
):
    url, schema = schemas[subgraph]
    if kind == "mutation" and schema.mutation_type is None:
        pytest.skip(f"{subgraph} has no mutations")
    strategy = _strategy(schema, kind, Mode.POSITIVE)
    _fuzz(fuzz_world, http_client, f"subgraph:{subgraph}", url, role, strategy)()
