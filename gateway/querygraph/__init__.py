"""The query graph: one vertex per (type, subgraph), edges for what a fetch can move along.

Built once from the supergraph at start-up. Field edges stay inside a subgraph; key edges
(`_entities` by a resolvable @key), root edges (a root type of one subgraph to another's) and
interface-object edges leave it, each with the field set the source must have fetched first
(its condition). @requires conditions sit on the field edges that need them; @provides marks
the fields a subgraph may answer below a field although it does not own them.
"""

from gateway.querygraph.graph import Edge, EdgeKind, QueryGraph, Vertex, build_query_graph

__all__ = ["Edge", "EdgeKind", "QueryGraph", "Vertex", "build_query_graph"]
