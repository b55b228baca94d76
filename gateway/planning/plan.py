"""Typed query plans: Sequence, Parallel, Fetch, Flatten and Condition nodes, and a printer.

A plan is compiled from the fetch-dependency graph: fetches of one subgraph with the same
dependencies share one HTTP call (a `FetchNode`, several `_entities` aliased in one document);
a node runs after its parent node only, so independent branches never wait for each other. A
node that waits for more than its tree parent (@requires fetched elsewhere) is placed after
the stage holding all it waits for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import DocumentNode, FragmentDefinitionNode, OperationDefinitionNode

from gateway.planning.builder import Fetch, OutSel, PlanningError


@dataclass(eq=False)
class FetchNode:
    """One HTTP call to one subgraph: a root selection or aliased `_entities` selections."""

    graph: str
    fetches: list[Fetch]
    query: str
    variables: list[str]
    is_entity: bool
    # Entity fetches with @fromContext arguments: the query is written per request (one
    # `_entities` per distinct set of context values), from these parts.
    var_defs: list[str] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    has_contexts: bool = False  # decided once: the executor checks it on every request

    @property
    def paths(self) -> list[tuple[str, ...]]:
        return sorted({f.path for f in self.fetches})


@dataclass(eq=False)
class FlattenNode:
    """Runs its fetch on the objects found at `path` (lists flattened)."""

    path: tuple[str, ...]
    node: FetchNode


@dataclass(eq=False)
class SequenceNode:
    nodes: list[PlanNode]


@dataclass(eq=False)
class ParallelNode:
    nodes: list[PlanNode]


@dataclass(eq=False)
class ConditionNode:
    """Runs `if_clause` when the boolean variable is true, `else_clause` otherwise."""

    variable: str
    if_clause: PlanNode | None
    else_clause: PlanNode | None


PlanNode = FetchNode | FlattenNode | SequenceNode | ParallelNode | ConditionNode
Batch = FetchNode  # the name older callers use


@dataclass
class Plan:
    operation_kind: str
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    node: PlanNode | None
    introspection: DocumentNode | None
    batches: list[list[FetchNode]] = field(default_factory=list)  # per group, dependency order
    # Per-request checks that depend on variables are done by the executor; this is static data.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def groups(self) -> list[list[list[FetchNode]]]:
        """Per group (one per mutation root field, one for a query), the fetch nodes by depth."""
        out: list[list[list[FetchNode]]] = []
        for group in self.batches:
            depth: dict[FetchNode, int] = {}
            levels: list[list[FetchNode]] = []
            for b in group:
                d = max((depth[p] + 1 for p in b_deps(b, group)), default=0)
                depth[b] = d
                while len(levels) <= d:
                    levels.append([])
                levels[d].append(b)
            out.append(levels)
        return out

    def describe(self) -> list[list[list[tuple[str, str]]]]:
        """(graph, query) per fetch node, by group and depth, for tests and debugging."""
        return [[[(b.graph, b.query) for b in level] for level in group] for group in self.groups]

    def print(self) -> str:
        return print_plan(self)


def b_deps(b: FetchNode, group: list[FetchNode]) -> list[FetchNode]:
    wanted = {id(d) for f in b.fetches for d in f.depends_on}
    return [o for o in group if o is not b and any(id(f) in wanted for f in o.fetches)]


# ---------------------------------------------------------------------------------------------
# Compilation


def _all_fetches(roots: list[Fetch]) -> list[Fetch]:
    out: list[Fetch] = []
    stack = list(reversed(roots))
    while stack:
        f = stack.pop()
        out.append(f)
        stack.extend(reversed(f.children))
    return out


def batch_fetches(roots: list[Fetch], op_kind: str, var_defs: Mapping[str, str]) -> list[FetchNode]:
    """The fetch nodes of one group, each after every node it depends on."""
    grouped: dict[tuple[Any, ...], list[Fetch]] = {}
    for f in _all_fetches(roots):
        if f.parent is None:
            key: tuple[Any, ...] = ("root", f.graph, id(f))
        else:
            key = (f.graph, id(f.parent), tuple(sorted(id(a) for a in f.after)))
        grouped.setdefault(key, []).append(f)
    nodes = [_fetch_node(fs, op_kind, var_defs) for fs in grouped.values()]
    # Topological order (Kahn), stable in discovery order.
    ordered: list[FetchNode] = []
    done: set[int] = set()
    pending = list(nodes)
    while pending:
        ready = [n for n in pending if all(id(d) in done for f in n.fetches for d in f.depends_on)]
        if not ready:
            raise PlanningError("the fetches of this operation depend on each other in a cycle")
        for n in ready:
            ordered.append(n)
            done.update(id(f) for f in n.fetches)
        pending = [n for n in pending if n not in ready]
    return ordered


def _fetch_node(fetches: list[Fetch], op_kind: str, var_defs: Mapping[str, str]) -> FetchNode:
    graph = fetches[0].graph
    used = sorted(set().union(*(f.variables for f in fetches)))
    defs = [var_defs[v] for v in used]
    client_defs = list(defs)
    bodies: list[str] = []
    if fetches[0].is_entity:
        parts = []
        for i, f in enumerate(fetches):
            f.index = i
            defs.insert(i, f"$r{i}:[_Any!]!")
            body = "".join(f"...on {t}{sel.print()}" for t, sel in f.out.fragments.items())
            bodies.append(body)
            parts.append(f"_{i}:_entities(representations:$r{i}){{__typename {body}}}")
            defs += [f"${c.variable}:{c.type}" for c in f.contexts]
        query = "query(" + ",".join(defs) + "){" + " ".join(parts) + "}"
    else:
        head = op_kind + ("(" + ",".join(defs) + ")" if defs else "")
        query = head + fetches[0].out.print()
    return FetchNode(graph, fetches, query, used, fetches[0].is_entity, client_defs, bodies,
                     any(f.contexts for f in fetches))


def compile_group(
    batches: list[FetchNode], condition: tuple[str, bool] | None = None
) -> PlanNode | None:
    """The typed tree of one group: each node under its parent, the rest in later stages."""
    deps = {b: b_deps(b, batches) for b in batches}
    children: dict[FetchNode, list[FetchNode]] = {b: [] for b in batches}
    later: list[FetchNode] = []
    ancestors: dict[FetchNode, set[FetchNode]] = {}
    for b in batches:  # dependency order: every dep's ancestors are known
        ancestors[b] = set(deps[b]).union(*(ancestors[d] for d in deps[b]))
    for b in batches:
        # Under the one dependency that already waits for all the others, if there is one.
        last = [d for d in deps[b] if all(o is d or o in ancestors[d] for o in deps[b])]
        if last:
            children[last[0]].append(b)
        elif deps[b]:
            later.append(b)
    scheduled: set[FetchNode] = set()

    def subtree(b: FetchNode) -> PlanNode:
        scheduled.add(b)
        node: PlanNode = b
        if b.is_entity:
            paths = b.paths
            node = FlattenNode(paths[0] if len(paths) == 1 else (), b)
        kids = [subtree(c) for c in children[b]]
        if not kids:
            return node
        return SequenceNode([node, kids[0] if len(kids) == 1 else ParallelNode(kids)])

    stages: list[PlanNode] = []
    ready = [b for b in batches if not deps[b]]
    while ready:
        trees = [subtree(b) for b in ready]
        stages.append(trees[0] if len(trees) == 1 else ParallelNode(trees))
        ready = [b for b in later if b not in scheduled and all(d in scheduled for d in deps[b])]
    if not stages:
        return None
    out: PlanNode = stages[0] if len(stages) == 1 else SequenceNode(stages)
    if condition is not None:
        var, when = condition
        out = ConditionNode(var, out if when else None, None if when else out)
    return out


# ---------------------------------------------------------------------------------------------
# Printer


def _rep_text(sel: OutSel, type_name: str) -> str:
    return f"...on {type_name}{sel.print()}"


def _print(node: PlanNode | None, indent: str, lines: list[str]) -> None:
    inner = indent + "  "
    if node is None:
        return
    if isinstance(node, SequenceNode | ParallelNode):
        lines.append(f"{indent}{'Sequence' if isinstance(node, SequenceNode) else 'Parallel'} {{")
        for n in node.nodes:
            _print(n, inner, lines)
        lines.append(f"{indent}}},")
    elif isinstance(node, FlattenNode):
        lines.append(f'{indent}Flatten(path: "{".".join(node.path)}") {{')
        _print(node.node, inner, lines)
        lines.append(f"{indent}}},")
    elif isinstance(node, ConditionNode):
        lines.append(f"{indent}Include(if: ${node.variable}) {{")
        _print(node.if_clause, inner, lines)
        if node.else_clause is not None:
            lines.append(f"{indent}}} Else {{")
            _print(node.else_clause, inner, lines)
        lines.append(f"{indent}}},")
    else:
        lines.append(f'{indent}Fetch(service: "{node.graph}") {{')
        if node.is_entity:
            for f in node.fetches:
                reps = " ".join(_rep_text(s, t) for t, s in f.reps.items())
                lines.append(f"{inner}{{{reps}}} =>")
        lines.append(f"{inner}{node.query}")
        lines.append(f"{indent}}},")


def print_plan(plan: Plan) -> str:
    lines = ["QueryPlan {"]
    _print(plan.node, "  ", lines)
    if plan.introspection is not None:
        lines.append("  (introspection answered by the gateway)")
    lines.append("}")
    return "\n".join(lines)
