"""Query planning: a validated operation -> a typed plan over subgraph fetches.

The query graph (`gateway/querygraph`) is built once per supergraph; the search over it
(`gateway/planning/paths.py`) is memoised across operations; each operation's fetch-dependency
graph (`gateway/planning/builder.py`) is compiled into typed Sequence / Parallel / Fetch /
Flatten / Condition nodes (`gateway/planning/plan.py`) that the executor follows. Plans are
cached (LRU) by the operation text and name.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    Visitor,
    parse,
    print_ast,
    validate,
    visit,
)
from graphql.language import DirectiveNode, VariableNode
from graphql.type import GraphQLObjectType

from gateway.planning import access
from gateway.planning.builder import (
    INTROSPECTION_ROOTS,
    Fetch,
    FetchGraphBuilder,
    OutSel,
    PlanningError,
)
from gateway.planning.fields import Occurrences
from gateway.planning.paths import PathFinder
from gateway.planning.plan import (
    Batch,
    FetchNode,
    Plan,
    SequenceNode,
    batch_fetches,
    compile_group,
    print_plan,
)
from gateway.querygraph import build_query_graph
from gateway.supergraph import Supergraph


class OperationResolutionError(GraphQLError):
    """The request names no operation of the document (or none when it must)."""


_FINDERS: OrderedDict[int, tuple[Supergraph, PathFinder]] = OrderedDict()


def path_finder(sg: Supergraph) -> PathFinder:
    """The query graph and its memoised search for a supergraph (built once)."""
    hit = _FINDERS.get(id(sg))
    if hit is not None and hit[0] is sg:
        return hit[1]
    finder = PathFinder(build_query_graph(sg))
    _FINDERS[id(sg)] = (sg, finder)
    if len(_FINDERS) > 8:
        _FINDERS.popitem(last=False)
    return finder


def select_operation(document: DocumentNode, operation_name: str | None
                     ) -> OperationDefinitionNode:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        op = next((o for o in ops if o.name and o.name.value == operation_name), None)
        if op is None:
            raise OperationResolutionError(f'Unknown operation named "{operation_name}".')
        return op
    if len(ops) == 1:
        return ops[0]
    raise OperationResolutionError(
        "Must provide operation name if query contains multiple operations.")


def _root_condition(fetch: Fetch, fields: dict[str, Occurrences]) -> tuple[str, bool] | None:
    """(variable, include-when) when every root field of a fetch sits under the same one
    @include/@skip on a variable: the whole branch becomes a Condition node."""
    seen: set[tuple[str, bool]] = set()
    for key in fetch.root_fields:
        for _, conds in fields[key]:
            if len(conds) != 1:
                return None
            d = conds[0]
            arg = d.arguments[0].value if d.arguments else None
            if not isinstance(arg, VariableNode):
                return None
            seen.add((arg.name.value, d.name.value == "include"))
    return seen.pop() if len(seen) == 1 else None


def build_plan(sg: Supergraph, schema: GraphQLSchema, document: DocumentNode,
               operation_name: str | None, labels: frozenset[str] = frozenset()) -> Plan:
    op = select_operation(document, operation_name)
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    kind = op.operation.value
    if kind == "subscription":
        raise OperationResolutionError("Subscriptions are not supported by this gateway.")
    root = schema.get_root_type(OperationType(kind))
    assert isinstance(root, GraphQLObjectType)
    finder = path_finder(sg)
    b = FetchGraphBuilder(sg, finder.qg, finder, schema, fragments, labels)
    var_defs = {v.variable.name.value: print_ast(v) for v in op.variable_definitions or ()}
    fields = b.collect(root.name, op.selection_set.selections)
    introspection = any(nodes[0][0].name.value in INTROSPECTION_ROOTS for nodes in fields.values())
    roots: list[Fetch] = []
    for key, nodes in fields.items():
        fname = nodes[0][0].name.value
        if fname in INTROSPECTION_ROOTS or fname == "__typename":
            continue
        graphs = sg.field_graphs(root.name, fname, labels)
        if not graphs:
            raise PlanningError(f'no subgraph resolves "{root.name}.{fname}"')
        if kind == "mutation":
            # Consecutive mutation fields of one subgraph share a fetch; order is kept.
            target = roots[-1] if roots and roots[-1].graph in graphs else None
        else:
            target = next((r for r in roots if r.graph in graphs), None)
        if target is None:
            target = Fetch(graph=_root_graph(b, root.name, graphs, nodes), path=())
            roots.append(target)
        target.root_fields.append(key)
        b.emit_field(target, target.graph, root.name, key, nodes, target.out, (), None)
    units = [[r] for r in roots] if kind == "mutation" else ([roots] if roots else [])
    batches = [batch_fetches(unit, kind, var_defs) for unit in units]
    nodes_: list[Any] = []
    for unit, group in zip(units, batches, strict=True):
        cond = _root_condition(unit[0], fields) if len(unit) == 1 else None
        node = compile_group(group, cond)
        if node is not None:
            nodes_.append(node)
    # Mutation root fields run one after another; a query has one group.
    top: Any = nodes_[0] if len(nodes_) == 1 else (SequenceNode(nodes_) if nodes_ else None)
    intro_doc = None
    if introspection:
        intro_doc = DocumentNode(definitions=(op, *fragments.values()))
    plan = Plan(kind, op, fragments, top, intro_doc, batches)
    if not _has_conditions(document):
        plan.extra["shape_cache"] = {}
    plan.extra["introspection_keys"] = [k for k, nodes in fields.items()
                                        if nodes[0][0].name.value in INTROSPECTION_ROOTS]
    return plan


def _root_graph(b: FetchGraphBuilder, root: str, graphs: frozenset[str],
                nodes: Occurrences) -> str:
    """A root field several subgraphs resolve: the one whose fetch answers most of it."""
    from gateway.querygraph import Vertex

    return min(sorted(graphs), key=lambda g: b._estimate(Vertex(root, g), nodes[0][0].name.value,
                                                        nodes))


def _has_conditions(document: DocumentNode) -> bool:
    found = False

    class _V(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            nonlocal found
            if node.name.value in ("include", "skip"):
                found = True

    visit(document, _V())
    return found


# ---------------------------------------------------------------------------------------------
# Cache


@dataclass
class CachedOperation:
    document: DocumentNode
    plan: Plan
    checks: dict[str, Any]


def _restricted_plan(planner: QueryPlanner, cached: CachedOperation, denied_ids: frozenset[int],
                     labels: frozenset[str]) -> Plan:
    doc = access.without(cached.document, denied_ids) if denied_ids else cached.document
    plan = build_plan(planner.supergraph, planner.schema, doc, cached.plan.operation.name.value
                      if cached.plan.operation.name else None, labels)
    # Shaped against the client's own operation: the removed fields answer null + an error.
    plan.operation = cached.plan.operation
    plan.fragments = cached.plan.fragments
    plan.extra["denied"] = denied_ids
    plan.extra.pop("shape_cache", None)
    return plan


class QueryPlanner:
    """Parses, validates and plans operations; results are cached (LRU) by document + name."""

    def __init__(self, supergraph: Supergraph, cache_size: int = 1000,
                 validators: Iterable[Any] = (), enabled_labels: Iterable[str] = (),
                 rng: random.Random | None = None) -> None:
        self.supergraph = supergraph
        self._labels = sorted(supergraph.override_labels())
        self.enabled_labels = frozenset(enabled_labels)
        self._random = rng or random.Random()
        self.schema = supergraph.api_schema
        self.cache_size = cache_size
        self.validators = list(validators)
        self._cache: OrderedDict[tuple[str, str | None], CachedOperation] = OrderedDict()
        self._exact: OrderedDict[tuple[str, str | None], CachedOperation] = OrderedDict()

    @staticmethod
    def cache_key(query: str, operation_name: str | None) -> tuple[str, str | None]:
        # The exact text: collapsing whitespace also collapsed it inside string literals, so one
        # client's `"a  b"` was answered with the plan made for another's `"a b"`.
        return (query, operation_name)

    def peek(self, query: str, operation_name: str | None) -> CachedOperation | None:
        # Exact text first: most clients send the same bytes every time.
        hit = self._exact.get((query, operation_name))
        if hit is not None:
            return hit
        key = self.cache_key(query, operation_name)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self._remember_exact(query, operation_name, hit)
        return hit

    def _remember_exact(self, query: str, operation_name: str | None,
                        entry: CachedOperation) -> None:
        self._exact[(query, operation_name)] = entry
        if len(self._exact) > self.cache_size:
            self._exact.popitem(last=False)

    def draw_labels(self) -> frozenset[str]:
        """Progressive @override labels on for one request: `percent(N)` with probability
        N/100, every other label when the gateway was told it is on."""
        on = set()
        for label in self._labels:
            if label.startswith("percent(") and label.endswith(")"):
                try:
                    share = float(label[len("percent("):-1])
                except ValueError:
                    continue
                if self._random.random() * 100 < share:
                    on.add(label)
            elif label in self.enabled_labels:
                on.add(label)
        return frozenset(on)

    def plan_for(self, cached: CachedOperation, principal: object | None,
                 labels: frozenset[str] | None = None) -> Plan:
        """The plan for this request: without the fields the caller's grants do not cover,
        with the progressive @override labels drawn for it."""
        labels = self.draw_labels() if labels is None else labels
        protected = cached.checks.get("protected")
        if protected is None:
            protected = cached.checks["protected"] = access.protected_fields(
                self.supergraph, self.schema, cached.document)
        denied_ids = access.denied(protected, access.grants_of(principal)) if protected \
            else frozenset()
        if not denied_ids and not labels:
            return cached.plan
        plans: dict[tuple[frozenset[int], frozenset[str]], Plan]
        plans = cached.checks.setdefault("plans", {})
        plan = plans.get((denied_ids, labels))
        if plan is None:
            plan = plans[(denied_ids, labels)] = _restricted_plan(self, cached, denied_ids,
                                                                  labels)
        return plan

    def get(self, query: str, operation_name: str | None,
            document: DocumentNode | None = None) -> CachedOperation:
        """Cached plan, or parse (unless given), validate, check limits and plan."""
        hit = self.peek(query, operation_name)
        if hit is not None:
            return hit
        key = self.cache_key(query, operation_name)
        if document is None:
            document = parse(query)
        errors = validate(self.schema, document)
        if errors:
            raise ValidationFailed(errors)
        checks: dict[str, Any] = {}
        for v in self.validators:
            v(document, operation_name, checks)
        plan = build_plan(self.supergraph, self.schema, document, operation_name)
        cached = CachedOperation(document, plan, checks)
        self._cache[key] = cached
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._remember_exact(query, operation_name, cached)
        return cached


class ValidationFailed(Exception):
    def __init__(self, errors: list[GraphQLError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors




__all__ = ["Batch", "CachedOperation", "Fetch", "FetchNode", "OutSel",
           "Plan", "PlanningError", "QueryPlanner", "ValidationFailed", "build_plan",
           "print_plan"]
