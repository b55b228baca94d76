"""The search over the query graph: which subgraph answers a field, reached how, at what cost.

Condition solving (can this subgraph fetch a key's or a @requires' field set here?) and the
routes from a vertex (cheapest chains of key / interface-object jumps, Dijkstra with one fetch
per jump as the cost) are memoised per planner: the query graph never changes after start.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from graphql import FieldNode, InlineFragmentNode, SelectionSetNode, print_ast

from gateway.querygraph import Edge, EdgeKind, QueryGraph, Vertex
from gateway.sdl import parse_field_set

Provided = dict[str, Any] | None  # what an enclosing @provides lets the subgraph answer


@dataclass(frozen=True)
class Route:
    edges: tuple[Edge, ...]  # KEY / INTERFACE_OBJECT jumps, in order

    @property
    def cost(self) -> int:
        return len(self.edges)


class PathFinder:
    def __init__(self, qg: QueryGraph) -> None:
        self.qg = qg
        self.sg = qg.supergraph
        self._fetchable: dict[tuple[Vertex, str], bool] = {}
        self._routes: dict[Vertex, dict[Vertex, Route]] = {}
        self._targets: dict[tuple[str, str], list[Vertex]] = {}

    # -- condition solving --------------------------------------------------------------------

    def fetchable(self, v: Vertex, sel: SelectionSetNode, provided: Provided = None) -> bool:
        """Can one fetch in v's subgraph answer the whole field set at v?"""
        if provided is not None:
            return self._fetchable_now(v, sel, provided)
        # Keyed by the field set's text: selection nodes are rebuilt per operation, and an
        # id() may be reused once one is gone.
        key = (v, print_ast(sel))
        hit = self._fetchable.get(key)
        if hit is None:
            hit = self._fetchable[key] = self._fetchable_now(v, sel, None)
        return hit

    def _fetchable_now(self, v: Vertex, sel: SelectionSetNode, provided: Provided) -> bool:
        for s in sel.selections:
            if isinstance(s, InlineFragmentNode):
                cond = s.type_condition.name.value if s.type_condition else v.type_name
                if not self.fetchable(Vertex(cond, v.graph), s.selection_set):
                    return False
                continue
            if not isinstance(s, FieldNode):
                return False
            name = s.name.value
            if name == "__typename":
                continue
            edge = self.qg.field_edge(v, name)
            by_provides = provided is not None and name in provided
            if edge is None and not by_provides:
                return False
            if s.selection_set is None:
                continue
            if by_provides and edge is None:
                fm = self.sg.types[v.type_name].fields[name]
                sub_v = Vertex(fm.type_name, v.graph)
                if not self._fetchable_now(sub_v, s.selection_set, provided[name]):  # type: ignore[index]
                    return False
            elif edge is not None and not self.fetchable(edge.tail, s.selection_set):
                return False
        return True

    # -- routes ---------------------------------------------------------------------------------

    def routes(self, start: Vertex, provided: Provided = None) -> dict[Vertex, Route]:
        """Cheapest jump chain from `start` to every vertex it can reach (start included)."""
        if provided is None:
            hit = self._routes.get(start)
            if hit is not None:
                return hit
        best: dict[Vertex, Route] = {}
        heap: list[tuple[int, int, Vertex, Route]] = [(0, 0, start, Route(()))]
        tie = 0
        while heap:
            _, _, v, route = heapq.heappop(heap)
            if v in best:
                continue
            best[v] = route
            for e in self.qg.edges(v, EdgeKind.KEY, EdgeKind.INTERFACE_OBJECT):
                if e.tail in best:
                    continue
                here = provided if v == start else None
                if not self.fetchable(v, parse_field_set(e.condition or ""), here):
                    continue
                tie += 1
                nxt = Route((*route.edges, e))
                heapq.heappush(heap, (nxt.cost, tie, e.tail, nxt))
        if provided is None:
            self._routes[start] = best
        return best

    def targets(self, type_name: str, field_name: str, labels: frozenset[str]) -> list[Vertex]:
        """Vertices with a field edge for `type_name.field_name`: the type's own subgraphs,
        and the @interfaceObject stand-ins of its interfaces."""
        key = (type_name, field_name)
        if not labels:
            hit = self._targets.get(key)
            if hit is not None:
                return hit
        out = [
            Vertex(type_name, g)
            for g in sorted(self.sg.field_graphs(type_name, field_name, labels))
        ]
        for iface, tm in sorted(self.sg.types.items()):
            if not tm.interface_objects or field_name not in tm.fields:
                continue
            if not any(type_name in members for members in tm.possible.values()):
                continue
            for g in sorted(tm.interface_objects & tm.fields[field_name].graphs):
                out.append(Vertex(iface, g))
        if not labels:
            self._targets[key] = out
        return out
