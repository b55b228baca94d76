"""A data-driven federation subgraph for the small-supergraph compat suite.

Any subgraph SDL becomes an executable subgraph over one shared "world": objects by
`Type:id` reference, each holding every field of every subgraph (the truth). A subgraph only
exposes the fields its SDL declares; `_entities` finds objects by any key in the
representation; a field with @requires refuses to answer unless the representation carried the
required fields (so a planner that forgets them fails the test); a value `{"__error": msg}`
raises. All subgraphs of all cases are served by one ASGI app under `/<case>/<subgraph>`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import uvicorn
from graphql import (
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    build_ast_schema,
    graphql_sync,
    parse,
)
from graphql.language import DocumentNode, ObjectTypeDefinitionNode, ObjectTypeExtensionNode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from doorward_kit.net import free_port
from gateway.composition import _PRELUDE_DOC, _PRELUDE_NAMES
from gateway.sdl import directives, parse_field_set, str_arg

ENTITY_EXTRA = """
scalar _Any
type _Service { sdl: String }
"""


def ref(type_name: str, id_: str) -> dict[str, str]:
    return {"__ref": f"{type_name}:{id_}"}


class World:
    def __init__(self, objects: Mapping[str, dict[str, Any]], roots: Mapping[str, Any]) -> None:
        self.objects = dict(objects)  # "Type:id" -> fields (with __typename)
        self.roots = dict(roots)  # root field name -> value (refs allowed)

    def deref(self, value: Any) -> Any:
        if isinstance(value, dict) and "__ref" in value:
            return self.objects[value["__ref"]]
        if isinstance(value, list):
            return [self.deref(v) for v in value]
        return value


class DataSubgraph:
    def __init__(self, name: str, sdl: str, world: World) -> None:
        self.name = name
        self.sdl = sdl
        self.world = world
        doc = parse(sdl)
        defs = [
            d
            for d in doc.definitions
            if not (hasattr(d, "name") and d.name and d.name.value in _PRELUDE_NAMES)
        ]
        self.requires: dict[tuple[str, str], list[str]] = {}
        self.keys: dict[str, list[list[str]]] = {}
        entities: list[str] = []
        for d in defs:
            if not isinstance(d, ObjectTypeDefinitionNode | ObjectTypeExtensionNode):
                if hasattr(d, "directives") and directives(d, "key") and hasattr(d, "name"):
                    self._keys(d)
                continue
            if directives(d, "key"):
                entities.append(d.name.value)
                self._keys(d)
            for f in d.fields or ():
                for r in directives(f, "requires"):
                    sel = parse_field_set(str_arg(r, "fields") or "")
                    self.requires[(d.name.value, f.name.value)] = [
                        s.name.value for s in sel.selections if hasattr(s, "name")
                    ]
        extra = ENTITY_EXTRA
        has_query = any(getattr(getattr(d, "name", None), "value", None) == "Query" for d in defs)
        query = "extend type Query" if has_query else "type Query"
        if entities:
            extra += f"union _Entity = {' | '.join(entities)}\n"
            extra += (
                query + " { _entities(representations: [_Any!]!): [_Entity]! "
                "_service: _Service! }\n"
            )
        else:
            extra += query + " { _service: _Service! }\n"
        full = DocumentNode(
            definitions=(*_PRELUDE_DOC.definitions, *defs, *parse(extra).definitions)
        )
        self.schema: GraphQLSchema = build_ast_schema(full, assume_valid_sdl=True)
        self._wire()

    def _keys(self, d: Any) -> None:
        for k in directives(d, "key"):
            sel = parse_field_set(str_arg(k, "fields") or "")
            self.keys.setdefault(d.name.value, []).append(
                [s.name.value for s in sel.selections if hasattr(s, "name")]
            )

    def _wire(self) -> None:
        for t in self.schema.type_map.values():
            if isinstance(t, GraphQLObjectType) and not t.name.startswith("__"):
                for fname, f in t.fields.items():
                    f.resolve = self._resolver(t.name, fname)
            if isinstance(t, GraphQLUnionType) or hasattr(t, "resolve_type"):
                t.resolve_type = self._resolve_type  # type: ignore[union-attr]

    def _resolve_type(self, obj: Any, info: Any, abstract: Any) -> str | None:
        rep_type = obj.get("__rep_type")
        if rep_type and isinstance(self.schema.get_type(rep_type), GraphQLObjectType):
            return str(rep_type)
        return obj.get("__typename")

    def _resolver(self, tname: str, fname: str) -> Any:
        world = self.world
        if tname == "Query" and fname == "_entities":
            return lambda _, info, representations: [self._entity(r) for r in representations]
        if tname == "Query" and fname == "_service":
            return lambda *_a, **_k: {"sdl": self.sdl}
        required = self.requires.get((tname, fname))

        def resolve(parent: Any, info: Any, **args: Any) -> Any:
            if tname in ("Query", "Mutation"):
                value = world.roots.get(fname)
                if callable(value):
                    value = value(**args)
            else:
                if required is not None:
                    rep = parent.get("__rep") or {}
                    missing = [r for r in required if r not in rep]
                    if missing:
                        raise GraphQLError(f"{self.name}: @requires fields {missing} missing")
                value = parent.get(fname)
                if isinstance(value, dict) and "__args" in value:
                    value = value["__args"].get(repr(sorted(args.items())), value.get("default"))
            if isinstance(value, dict) and "__error" in value:
                raise GraphQLError(value["__error"])
            return world.deref(value)

        return resolve

    def _entity(self, rep: dict[str, Any]) -> Any:
        tname = rep.get("__typename")
        for key in self.keys.get(tname or "", []):
            if not all(k in rep for k in key):
                continue
            for obj in self.world.objects.values():
                types = {obj["__typename"], *obj.get("__interfaces", ())}
                if tname in types and all(obj.get(k) == rep[k] for k in key):
                    return {**obj, "__rep": rep, "__rep_type": tname}
        return None


def app_for(cases: Mapping[str, Mapping[str, DataSubgraph]]) -> Starlette:
    async def handle(request: Request) -> JSONResponse:
        sub = cases[request.path_params["case"]][request.path_params["sub"]]
        body = await request.json()
        result = graphql_sync(sub.schema, body["query"], variable_values=body.get("variables"))
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            out["errors"] = [e.formatted for e in result.errors]
        return JSONResponse(out)

    return Starlette(routes=[Route("/{case}/{sub}", handle, methods=["POST"])])


class Case(Protocol):
    """What serving needs of a compat case: its name, subgraphs (name -> SDL) and data."""

    name: str
    subgraphs: Mapping[str, str]
    objects: Any
    roots: Any


@contextmanager
def serve_cases(cases: Iterable[Case], thread_name: str) -> Iterator[str]:
    """Every case's data subgraphs on one free port (`{base}/{case}/{subgraph}`), stopped on
    exit: yields the base URL."""
    subgraphs = {
        c.name: {n: DataSubgraph(n, sdl, World(c.objects, c.roots)) for n, sdl in c.subgraphs.items()}
        for c in cases
    }
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app_for(subgraphs), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True, name=thread_name)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            server.should_exit = True
            raise AssertionError("data subgraphs did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
