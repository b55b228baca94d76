"""The parsed supergraph: what each subgraph resolves, read from a join-spec supergraph SDL.

Both start-up paths (compose from live subgraphs, or read a supergraph file, ours or Apollo's)
end in `Supergraph.from_sdl`, so the runtime model is always built from the supergraph text.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    EnumTypeDefinitionNode,
    EnumValueNode,
    GraphQLSchema,
    ListValueNode,
    NamedTypeNode,
    NameNode,
    OperationType,
    OperationTypeDefinitionNode,
    SchemaDefinitionNode,
    SchemaExtensionNode,
    StringValueNode,
    TypeDefinitionNode,
    TypeExtensionNode,
    build_ast_schema,
    parse,
    validate_schema,
)

from gateway.contexts import ContextArgument, read_context_arguments
from gateway.sdl import (
    KIND,
    ROOT_NAMES,
    CompositionError,
    arg,
    bool_arg,
    directives,
    named_type,
    str_arg,
)

Scopes = tuple[tuple[str, ...], ...]  # OR of ANDs, as @requiresScopes / @policy write them
# Type names of the supergraph's own machinery (never part of the API).
_MACHINERY = ("join__", "link__", "requiresScopes__", "policy__", "context__")


@dataclass(frozen=True)
class Access:
    """What the client must hold to see a field or type (@authenticated, @requiresScopes,
    @policy); empty means public."""

    authenticated: bool = False
    scopes: Scopes = ()
    policies: Scopes = ()

    def __bool__(self) -> bool:
        return self.authenticated or bool(self.scopes) or bool(self.policies)


@dataclass(frozen=True)
class FieldMeta:
    graphs: frozenset[str]  # subgraphs that resolve the field
    defined_in: frozenset[str]  # subgraphs whose schema has the field (resolving or @external)
    requires: Mapping[str, str]  # subgraph -> field set
    provides: Mapping[str, str]
    type_name: str  # named output type
    # Progressive @override: subgraph -> (label, overridden subgraph or ""): the overriding
    # subgraph resolves the field while the label is on, the overridden one while it is off.
    override_labels: Mapping[str, tuple[str, str]] = field(default_factory=dict, compare=False)
    access: Access = field(default_factory=Access, compare=False)
    # @fromContext: subgraph -> the arguments the gateway fills from an enclosing context.
    context_args: Mapping[str, tuple[ContextArgument, ...]] = field(default_factory=dict)


@dataclass
class TypeMeta:
    name: str
    kind: str
    graphs: set[str] = field(default_factory=set)
    keys: dict[str, list[str]] = field(default_factory=dict)  # graph -> resolvable key field sets
    fields: dict[str, FieldMeta] = field(default_factory=dict)
    # graph -> concrete object types (interfaces: implementations; unions: members)
    possible: dict[str, set[str]] = field(default_factory=dict)
    # Subgraphs that see this entity interface as an object type (@interfaceObject).
    interface_objects: set[str] = field(default_factory=set, compare=False)
    access: Access = field(default_factory=Access, compare=False)
    contexts: set[str] = field(default_factory=set)  # supergraph context names set here


def _scopes(d: DirectiveNode, name: str) -> Scopes:
    v = arg(d, name)
    if not isinstance(v, ListValueNode):
        return ()
    out = []
    for inner in v.values:
        if isinstance(inner, ListValueNode):
            out.append(tuple(s.value for s in inner.values if isinstance(s, StringValueNode)))
    return tuple(out)


def merge_access(items: list[Access]) -> Access:
    """Several subgraphs' requirements on one element: all of them hold (DNF conjunction)."""

    def conj(a: Scopes, b: Scopes) -> Scopes:
        if not a or not b:
            return a or b
        return tuple(sorted({tuple(sorted(set(x) | set(y))) for x in a for y in b}))

    out = Access()
    for it in items:
        out = Access(
            out.authenticated or it.authenticated,
            conj(out.scopes, it.scopes),
            conj(out.policies, it.policies),
        )
    return out


def access_directives(access: Access) -> str:
    """The access directives as supergraph SDL (after a field or type head)."""

    def lists(v: Scopes) -> str:
        return "[" + ", ".join("[" + ", ".join(f'"{s}"' for s in alt) + "]" for alt in v) + "]"

    out = " @authenticated" if access.authenticated else ""
    if access.scopes:
        out += f" @requiresScopes(scopes: {lists(access.scopes)})"
    if access.policies:
        out += f" @policy(policies: {lists(access.policies)})"
    return out


def access_of(node: Any) -> Access:
    scopes: Scopes = ()
    policies: Scopes = ()
    for d in node.directives or ():
        name = d.name.value
        if name == "requiresScopes":
            scopes = _scopes(d, "scopes")
        elif name == "policy":
            policies = _scopes(d, "policies")
    return Access(bool(directives(node, "authenticated")), scopes, policies)


class _Reader:
    """Reads the join directives of one supergraph document into TypeMetas."""

    def __init__(self, doc: DocumentNode) -> None:
        self.doc = doc
        self.graph_names: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        for d in doc.definitions:
            if isinstance(d, EnumTypeDefinitionNode) and d.name.value == "join__Graph":
                for v in d.values or ():
                    for jg in directives(v, "join__graph"):
                        self.graph_names[v.name.value] = str_arg(jg, "name") or v.name.value
                        self.urls[self.graph_names[v.name.value]] = str_arg(jg, "url") or ""
        if not self.graph_names:
            raise CompositionError(["not a supergraph SDL: no join__Graph enum"])
        self.roots = dict(ROOT_NAMES)
        for d in doc.definitions:
            if isinstance(d, SchemaDefinitionNode | SchemaExtensionNode):
                for ot in d.operation_types or ():
                    self.roots[ot.operation.value] = ot.type.name.value
        self.types: dict[str, TypeMeta] = {}
        self.implements: list[tuple[str, str, str]] = []  # graph, object, interface

    def graph(self, dn: DirectiveNode) -> str | None:
        v = arg(dn, "graph")
        return self.graph_names.get(v.value) if isinstance(v, EnumValueNode) else None

    def read(self) -> dict[str, TypeMeta]:
        for d in self.doc.definitions:
            kind = KIND.get(type(d))
            if kind is None:
                continue
            tname = d.name.value  # type: ignore[attr-defined]
            if tname.startswith(_MACHINERY):
                continue
            tm = self.types.setdefault(tname, TypeMeta(tname, kind))
            self._type(d, tm)
            if kind != "input":
                for f in getattr(d, "fields", None) or ():
                    tm.fields[f.name.value] = self._field(f, tm)
        for g, obj, iface in self.implements:
            if iface in self.types:
                self.types[iface].possible.setdefault(g, set()).add(obj)
        # A type with no join__type at all (older supergraphs) lives in every graph.
        for tm in self.types.values():
            if not tm.graphs:
                tm.graphs = set(self.graph_names.values())
        return self.types

    def _type(self, d: Any, tm: TypeMeta) -> None:
        tm.access = access_of(d)
        tm.contexts |= {n for c in directives(d, "context") if (n := str_arg(c, "name"))}
        for jt in directives(d, "join__type"):
            g = self.graph(jt)
            if g is None:
                continue
            tm.graphs.add(g)
            key = str_arg(jt, "key")
            tm.keys.setdefault(g, [])
            if key is not None and bool_arg(jt, "resolvable", True):
                tm.keys[g].append(key)
            if bool_arg(jt, "isInterfaceObject", False):
                tm.interface_objects.add(g)
        for ji in directives(d, "join__implements"):
            g = self.graph(ji)
            if g is not None:
                self.implements.append((g, tm.name, str_arg(ji, "interface") or ""))
        if tm.kind == "union":
            for jm in directives(d, "join__unionMember"):
                g = self.graph(jm)
                if g is not None:
                    tm.possible.setdefault(g, set()).add(str_arg(jm, "member") or "")

    def _field(self, f: Any, tm: TypeMeta) -> FieldMeta:
        jfs = directives(f, "join__field")
        graphs: set[str] = set()
        defined: set[str] = set()
        requires: dict[str, str] = {}
        provides: dict[str, str] = {}
        labels: dict[str, tuple[str, str]] = {}
        ctx_args: dict[str, tuple[ContextArgument, ...]] = {}
        if not jfs:
            graphs = set(tm.graphs)
            defined = set(tm.graphs)
        # A bare `@join__field` (no graph): no subgraph of the type resolves it; it comes from
        # an @interfaceObject of one of the type's interfaces.
        for j in jfs:
            g = self.graph(j)
            if g is None or bool_arg(j, "usedOverridden", False):
                continue
            defined.add(g)
            if not bool_arg(j, "external", False):
                graphs.add(g)
            if (r := str_arg(j, "requires")) is not None:
                requires[g] = r
            if (p := str_arg(j, "provides")) is not None:
                provides[g] = p
            if (c := read_context_arguments(arg(j, "contextArguments"))):
                ctx_args[g] = c
            label = str_arg(j, "overrideLabel")
            if label is not None:
                labels[g] = (label, str_arg(j, "override") or "")
        return FieldMeta(
            frozenset(graphs),
            frozenset(defined),
            requires,
            provides,
            named_type(f.type),
            labels,
            access_of(f),
            ctx_args,
        )


@dataclass
class Supergraph:
    sdl: str
    urls: dict[str, str]  # subgraph name -> url
    types: dict[str, TypeMeta]
    api_schema: GraphQLSchema
    roots: dict[str, str] = field(default_factory=lambda: dict(ROOT_NAMES))

    @classmethod
    def from_sdl(cls, sdl: str) -> Supergraph:
        doc = parse(sdl, no_location=True)
        reader = _Reader(doc)
        types = reader.read()
        api = build_api_schema(doc, reader.roots)
        return cls(sdl, reader.urls, types, api, reader.roots)

    def possible_types(self, abstract: str, graph: str) -> set[str]:
        tm = self.types[abstract]
        if tm.kind == "object":
            return {abstract}
        return tm.possible.get(graph, set())

    def field_graphs(
        self, type_name: str, field_name: str, labels: frozenset[str] = frozenset()
    ) -> frozenset[str]:
        """Subgraphs resolving a field, with progressive @override decided by `labels`."""
        fm = self.types[type_name].fields[field_name]
        if not fm.override_labels:
            return fm.graphs
        graphs = set(fm.graphs)
        for g, (label, source) in fm.override_labels.items():
            if (label in labels) != bool(source):
                graphs.discard(g)
        return frozenset(graphs)

    def override_labels(self) -> frozenset[str]:
        return frozenset(
            label
            for tm in self.types.values()
            for fm in tm.fields.values()
            for label, _ in fm.override_labels.values()
        )


def _is_inaccessible(node: Any) -> bool:
    return bool(directives(node, "inaccessible"))


def _keep_public_directives(node: Any) -> Any:
    node = copy.copy(node)
    node.directives = tuple(
        d for d in node.directives or () if d.name.value in ("deprecated", "specifiedBy", "oneOf")
    )
    return node


def _public_node(d: Any, hidden: set[str]) -> Any:
    node = _keep_public_directives(d)
    if getattr(node, "fields", None):
        kept = []
        for f in node.fields:
            if _is_inaccessible(f) or named_type(f.type) in hidden:
                continue
            f = _keep_public_directives(f)
            if getattr(f, "arguments", None):
                f.arguments = tuple(
                    _keep_public_directives(a) for a in f.arguments if not _is_inaccessible(a)
                )
            kept.append(f)
        node.fields = tuple(kept)
    if getattr(node, "values", None):
        node.values = tuple(
            _keep_public_directives(v) for v in node.values if not _is_inaccessible(v)
        )
    if getattr(node, "types", None):
        node.types = tuple(t for t in node.types if t.name.value not in hidden)
    if getattr(node, "interfaces", None):
        node.interfaces = tuple(t for t in node.interfaces if t.name.value not in hidden)
    return node


def build_api_schema(doc: DocumentNode, roots: Mapping[str, str]) -> GraphQLSchema:
    """The client-facing schema: no join/link machinery, no @inaccessible element."""
    hidden = {
        d.name.value
        for d in doc.definitions
        if isinstance(d, TypeDefinitionNode) and _is_inaccessible(d)
    }
    defs: list[Any] = []
    present: set[str] = set()
    for d in doc.definitions:
        if not isinstance(d, TypeDefinitionNode | TypeExtensionNode):
            continue
        name = d.name.value
        if name.startswith(_MACHINERY) or name in hidden:
            continue
        defs.append(_public_node(d, hidden))
        present.add(name)
    ops = [
        OperationTypeDefinitionNode(
            operation=OperationType(k), type=NamedTypeNode(name=NameNode(value=v))
        )
        for k, v in roots.items()
        if v in present
    ]
    defs.insert(0, SchemaDefinitionNode(operation_types=tuple(ops), directives=()))
    schema = build_ast_schema(DocumentNode(definitions=tuple(defs)), assume_valid_sdl=True)
    problems = validate_schema(schema)
    if problems:
        raise CompositionError([f"invalid API schema: {e.message}" for e in problems])
    return schema


__all__ = ["Access", "FieldMeta", "Supergraph", "TypeMeta", "build_api_schema"]
