"""The public API schema (SDL) of the Doorward supergraph, built from the subgraphs' own schema
objects: no process needs to run. `doorward gateway schema` prints it; `schema.graphql` at the
repository root is its committed snapshot, kept current by tests/unit/test_schema_snapshot.py.

Lives in deploy/ because it imports every subgraph (the gateway never imports a service).
"""

from __future__ import annotations

from collections.abc import Callable

from graphql import GraphQLSchema, build_schema, print_schema

from gateway.composition import Supergraph, compose

SDL_QUERY = "{ _service { sdl } }"


def _subgraph_schemas() -> dict[str, Callable[[], object]]:
    from services.audit.api.graphql import build_schema as audit
    from services.identity.api.graphql import build_schema as identity
    from services.workorders.api.graphql import build_schema as workorders

    return {"identity": identity, "workorders": workorders, "audit": audit}


def subgraph_sdls() -> dict[str, str]:
    """Each subgraph's federation SDL, exactly what it answers to `{ _service { sdl } }`."""
    sdls: dict[str, str] = {}
    for name, build in _subgraph_schemas().items():
        result = build().execute_sync(SDL_QUERY)  # type: ignore[attr-defined]
        if result.errors:
            raise RuntimeError(f"{name}: cannot print its SDL: {result.errors[0].message}")
        sdls[name] = result.data["_service"]["sdl"]
    return sdls


def api_schema() -> GraphQLSchema:
    sdls = {name: (f"http://{name}.invalid/graphql", sdl) for name, sdl in subgraph_sdls().items()}
    return Supergraph.from_sdl(compose(sdls)).api_schema


def api_schema_sdl() -> str:
    """The client-facing schema, printed in graphql-core's canonical order."""
    return print_schema(api_schema()) + "\n"


def parse_sdl(sdl: str) -> GraphQLSchema:
    return build_schema(sdl)
