"""Vertices, edges and their construction from a `Supergraph`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.supergraph import Supergraph

COMPOSITE = ("object", "interface", "union")


class EdgeKind(StrEnum):
    FIELD = "field"  # a field resolved by the subgraph (condition: its @requires)
    DOWNCAST = "downcast"  # abstract type -> one of its possible types in the same subgraph
    KEY = "key"  # `_entities` jump to another subgraph (condition: the key fields)
    ROOT = "root"  # root type of one subgraph -> the same root type of another
    INTERFACE_OBJECT = "interface_object"  # concrete type -> its @interfaceObject stand-in


@dataclass(frozen=True, order=True)
class Vertex:
    type_name: str
    graph: str

    def __str__(self) -> str:
        return f"{self.type_name}({self.graph})"


@dataclass(frozen=True)
class Edge:
    kind: EdgeKind
    head: Vertex
    tail: Vertex
    name: str = ""  # field name (FIELD), type condition (DOWNCAST)
    condition: str | None = None  # field set the head must have fetched first
    provides: str | None = None  # FIELD: what the subgraph provides below this field

    def __str__(self) -> str:
        cond = f" <{self.condition}>" if self.condition else ""
        return f"{self.head} -{self.kind}:{self.name}{cond}-> {self.tail}"


@dataclass
class QueryGraph:
    supergraph: Supergraph
    vertices: set[Vertex] = field(default_factory=set)
    out: dict[Vertex, list[Edge]] = field(default_factory=dict)
    fields: dict[tuple[Vertex, str], Edge] = field(default_factory=dict)

    def add(self, edge: Edge) -> None:
        self.vertices.add(edge.head)
        self.vertices.add(edge.tail)
        self.out.setdefault(edge.head, []).append(edge)
        if edge.kind is EdgeKind.FIELD:
            self.fields[(edge.head, edge.name)] = edge

    def edges(self, v: Vertex, *kinds: EdgeKind) -> Iterator[Edge]:
        for e in self.out.get(v, ()):
            if not kinds or e.kind in kinds:
                yield e

    def field_edge(self, v: Vertex, name: str) -> Edge | None:
        return self.fields.get((v, name))

    def jumps(self, v: Vertex) -> list[Edge]:
        """Edges that leave v's subgraph for the same type: keys and root transitions."""
        return [e for e in self.out.get(v, ()) if e.kind in (EdgeKind.KEY, EdgeKind.ROOT)]

    def describe(self) -> list[str]:
        return sorted(str(e) for es in self.out.values() for e in es)


def build_query_graph(sg: Supergraph) -> QueryGraph:
    qg = QueryGraph(sg)
    roots = set(sg.roots.values())
    for tm in sg.types.values():
        if tm.kind not in COMPOSITE:
            continue
        for g in sorted(tm.graphs):
            qg.vertices.add(Vertex(tm.name, g))
        _field_edges(qg, tm.name)
        _downcast_edges(qg, tm.name)
        if tm.name in roots:
            for g in tm.graphs:
                for h in tm.graphs - {g}:
                    qg.add(Edge(EdgeKind.ROOT, Vertex(tm.name, g), Vertex(tm.name, h)))
            continue
        _key_edges(qg, tm.name)
    return qg


def _field_edges(qg: QueryGraph, tname: str) -> None:
    sg = qg.supergraph
    tm = sg.types[tname]
    for fname, fm in tm.fields.items():
        target = sg.types.get(fm.type_name)
        for g in sorted(fm.graphs):
            tail_type = fm.type_name if target is not None and target.kind in COMPOSITE else ""
            tail = Vertex(tail_type or fm.type_name, g)
            qg.add(
                Edge(
                    EdgeKind.FIELD,
                    Vertex(tname, g),
                    tail,
                    fname,
                    fm.requires.get(g),
                    fm.provides.get(g),
                )
            )


def _downcast_edges(qg: QueryGraph, tname: str) -> None:
    sg = qg.supergraph
    tm = sg.types[tname]
    if tm.kind == "object":
        return
    for g in sorted(tm.graphs):
        for concrete in sorted(sg.possible_types(tname, g)):
            qg.add(Edge(EdgeKind.DOWNCAST, Vertex(tname, g), Vertex(concrete, g), concrete))


def _key_edges(qg: QueryGraph, tname: str) -> None:
    sg = qg.supergraph
    tm = sg.types[tname]
    for h, keys in sorted(tm.keys.items()):
        for key in keys:
            for g in sorted(tm.graphs - {h}):
                qg.add(Edge(EdgeKind.KEY, Vertex(tname, g), Vertex(tname, h), "", key))
    if tm.kind != "interface" or not tm.interface_objects:
        return
    # An entity interface seen as an object type elsewhere: every implementation can reach
    # the stand-in through the interface's keys (the representation says the interface's
    # name), and the stand-in reaches the implementations' own subgraphs through the owner.
    for impl in sorted(set().union(*tm.possible.values()) if tm.possible else ()):
        for g in sorted(sg.types[impl].graphs):
            for h in sorted(tm.interface_objects):
                for key in tm.keys.get(h, []):
                    qg.add(
                        Edge(
                            EdgeKind.INTERFACE_OBJECT, Vertex(impl, g), Vertex(tname, h), tname, key
                        )
                    )
