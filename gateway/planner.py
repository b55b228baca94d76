"""Query planning: a validated operation -> subgraph fetches, batched per subgraph and per depth.

Plan shape: `groups` run one after another (mutation root fields keep their order; a query
has one group). Inside a group, `levels[0]` are root fetches and `levels[n]` are entity fetches
whose parents are at level n-1; all batches of one level run in parallel, and a level has at
most one HTTP call per subgraph (several `_entities` selections aliased in one document).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    VariableNode,
    Visitor,
    is_abstract_type,
    parse,
    print_ast,
    validate,
    visit,
)
from graphql.language import DirectiveNode, SelectionSetNode
from graphql.type import GraphQLObjectType

from gateway.composition import Supergraph, parse_field_set

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
MAX_KEY_HOPS = 3


class OperationResolutionError(GraphQLError):
    """The request names no operation of the document (or none when it must)."""


class PlanningError(Exception):
    """The supergraph cannot answer the operation (a composition gap, not a client error)."""


# ---------------------------------------------------------------------------------------------
# Subgraph selection tree (mutable while planning, printed once)


@dataclass
class OutField:
    name: str
    alias: str | None
    args: str
    directives: str
    sub: OutSel | None = None
    source: str | None = None  # representations: response key the value is read from


@dataclass
class OutSel:
    fields: dict[str, OutField] = field(default_factory=dict)
    fragments: dict[str, OutSel] = field(default_factory=dict)  # type condition -> selections

    def add_field(self, key: str, name: str, alias: str | None = None, args: str = "",
                  directives: str = "", composite: bool = False) -> OutField:
        existing = self.fields.get(key)
        if existing is not None:
            if existing.directives != directives:
                # Same response key reached under different conditions: fetch it always.
                existing.directives = ""
            if composite and existing.sub is None:
                existing.sub = OutSel()
            return existing
        f = OutField(name, alias, args, directives, OutSel() if composite else None)
        self.fields[key] = f
        return f

    def fragment(self, type_name: str) -> OutSel:
        sel = self.fragments.get(type_name)
        if sel is None:
            sel = self.fragments[type_name] = OutSel()
        return sel

    def print(self) -> str:
        parts: list[str] = []
        for f in self.fields.values():
            text = (f"{f.alias}:" if f.alias else "") + f.name + f.args + f.directives
            if f.sub is not None:
                text += f.sub.print()
            parts.append(text)
        for cond, sel in self.fragments.items():
            parts.append(f"...on {cond}{sel.print()}")
        return "{" + " ".join(parts) + "}"


# ---------------------------------------------------------------------------------------------
# Plan


@dataclass(eq=False)
class Fetch:
    graph: str
    path: tuple[str, ...]  # response keys from the root to the parent objects (lists flattened)
    out: OutSel = field(default_factory=OutSel)
    # Entity fetches: per entity type, the representation selection (typename + key + requires).
    reps: dict[str, OutSel] = field(default_factory=dict)
    children: list[Fetch] = field(default_factory=list)
    variables: set[str] = field(default_factory=set)
    root_fields: list[str] = field(default_factory=list)  # response keys of a root fetch
    index: int = 0  # alias of this fetch's `_entities` inside its batch

    @property
    def is_entity(self) -> bool:
        return bool(self.reps)


@dataclass
class Batch:
    graph: str
    fetches: list[Fetch]
    query: str
    variables: list[str]  # user variables to send along
    is_entity: bool


@dataclass
class Plan:
    operation_kind: str
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    groups: list[list[list[Batch]]]  # group -> level -> batches
    introspection: DocumentNode | None
    # Per-request checks that depend on variables are done by the executor; this is static data.
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> list[list[list[tuple[str, str]]]]:
        """(graph, query) per batch, for tests and debugging."""
        return [[[(b.graph, b.query) for b in level] for level in group] for group in self.groups]


# ---------------------------------------------------------------------------------------------
# Planner


def _provided_tree(fields: str) -> dict[str, Any]:
    return _sel_tree(parse_field_set(fields))


def _sel_tree(sel: SelectionSetNode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sel.selections:
        if isinstance(s, FieldNode):
            out[s.name.value] = _sel_tree(s.selection_set) if s.selection_set else {}
        elif isinstance(s, InlineFragmentNode):
            out.update(_sel_tree(s.selection_set))
    return out


class _VarCollector(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)


def _vars_in(nodes: Iterable[Any]) -> set[str]:
    vc = _VarCollector()
    for n in nodes:
        visit(n, vc)
    return vc.names


def _condition_directives(node: Any) -> tuple[DirectiveNode, ...]:
    return tuple(d for d in node.directives or () if d.name.value in ("include", "skip"))


class _Builder:
    def __init__(self, sg: Supergraph, schema: GraphQLSchema,
                 fragments: Mapping[str, FragmentDefinitionNode]) -> None:
        self.sg = sg
        self.schema = schema
        self.fragments = fragments
        self._hops = 0  # nesting of multi-hop key fetches, bounded by MAX_KEY_HOPS

    # -- field collection --------------------------------------------------------------------

    def _applies(self, cond: str | None, type_name: str) -> bool:
        if cond is None or cond == type_name:
            return True
        ct = self.schema.get_type(cond)
        ot = self.schema.get_type(type_name)
        if ct is None or ot is None or not is_abstract_type(ct):
            return False
        return self.schema.is_sub_type(ct, ot)  # type: ignore[arg-type]

    def collect(self, type_name: str, selections: Iterable[SelectionNode],
                conds: tuple[DirectiveNode, ...] = ()
                ) -> OrderedDict[str, list[tuple[FieldNode, tuple[DirectiveNode, ...]]]]:
        """Fields of `type_name` by response key, with the @include/@skip that guard each."""
        out: OrderedDict[str, list[tuple[FieldNode, tuple[DirectiveNode, ...]]]] = OrderedDict()
        self._collect(type_name, selections, conds, out)
        return out

    def _collect(self, type_name: str, selections: Iterable[SelectionNode],
                 conds: tuple[DirectiveNode, ...],
                 out: OrderedDict[str, list[tuple[FieldNode, tuple[DirectiveNode, ...]]]]) -> None:
        for sel in selections:
            if isinstance(sel, FieldNode):
                key = sel.alias.value if sel.alias else sel.name.value
                out.setdefault(key, []).append((sel, conds + _condition_directives(sel)))
            elif isinstance(sel, InlineFragmentNode):
                cond = sel.type_condition.name.value if sel.type_condition else None
                if self._applies(cond, type_name):
                    self._collect(type_name, sel.selection_set.selections,
                                  conds + _condition_directives(sel), out)
            elif isinstance(sel, FragmentSpreadNode):
                frag = self.fragments[sel.name.value]
                if self._applies(frag.type_condition.name.value, type_name):
                    self._collect(type_name, frag.selection_set.selections,
                                  conds + _condition_directives(sel), out)

    # -- planning ----------------------------------------------------------------------------

    def _local(self, g: str, type_name: str, fname: str, provided: dict[str, Any] | None,
               entity_top: bool = False) -> bool:
        if fname == "__typename":
            return True
        fm = self.sg.types[type_name].fields.get(fname)
        if fm is None:
            raise PlanningError(f'unknown field "{type_name}.{fname}"')
        if g in fm.requires:
            # Only the top of an entity fetch carries the required fields in its representation.
            return entity_top
        return g in fm.graphs or (provided is not None and fname in provided)

    def plan_composite(self, fetch: Fetch, g: str, type_name: str,
                       selections: list[SelectionNode], out: OutSel, path: tuple[str, ...],
                       provided: dict[str, Any] | None) -> None:
        tm = self.sg.types[type_name]
        if tm.kind == "object":
            self.plan_object(fetch, g, type_name, selections, out, path, provided)
            return
        out.add_field("__typename", "__typename")
        for concrete in sorted(self.sg.possible_types(type_name, g)):
            if self.schema.get_type(concrete) is None:
                continue  # @inaccessible: clients cannot select it
            fields = self.collect(concrete, selections)
            only_typename = all(k == "__typename" or nodes[0][0].name.value == "__typename"
                                for k, nodes in fields.items())
            if not fields or only_typename:
                continue
            self.plan_object(fetch, g, concrete, selections, out.fragment(concrete), path,
                             provided)

    def plan_object(self, fetch: Fetch, g: str, type_name: str,
                    selections: list[SelectionNode], out: OutSel, path: tuple[str, ...],
                    provided: dict[str, Any] | None, entity_top: bool = False) -> None:
        remote: list[tuple[str, list[tuple[FieldNode, tuple[DirectiveNode, ...]]]]] = []
        for key, nodes in self.collect(type_name, selections).items():
            node = nodes[0][0]
            fname = node.name.value
            if fname in INTROSPECTION_ROOTS:
                continue
            if not self._local(g, type_name, fname, provided, entity_top):
                remote.append((key, nodes))
                continue
            self._emit_field(fetch, g, type_name, key, nodes, out, path, provided)
        if remote:
            self._jump(fetch, g, type_name, remote, out, path, provided)

    def _emit_field(self, fetch: Fetch, g: str, type_name: str, key: str,
                    nodes: list[tuple[FieldNode, tuple[DirectiveNode, ...]]], out: OutSel,
                    path: tuple[str, ...], provided: dict[str, Any] | None) -> None:
        node = nodes[0][0]
        fname = node.name.value
        # Directives survive only if every occurrence carries the same ones.
        dir_texts = {" ".join(print_ast(d) for d in conds) for _, conds in nodes}
        directives = (" " + dir_texts.pop()) if len(dir_texts) == 1 and "" not in dir_texts \
            else ""
        if directives:
            fetch.variables |= _vars_in(nodes[0][1])
        args = ""
        if node.arguments:
            args = "(" + ",".join(print_ast(a) for a in node.arguments) + ")"
            fetch.variables |= _vars_in(node.arguments)
        alias = key if key != fname else None
        if fname == "__typename":
            out.add_field(key, fname, alias, "", directives)
            return
        fm = self.sg.types[type_name].fields[fname]
        composite = self.sg.types.get(fm.type_name) is not None and \
            self.sg.types[fm.type_name].kind in ("object", "interface", "union")
        of = out.add_field(key, fname, alias, args, directives, composite)
        if not composite:
            return
        assert of.sub is not None
        sub_sel: list[SelectionNode] = []
        for n, _ in nodes:
            if n.selection_set is not None:
                sub_sel.extend(n.selection_set.selections)
        # What g may answer below this field although it does not own it: an enclosing
        # @provides, and this field's own @provides in g.
        sub_provided: dict[str, Any] | None = None
        if provided is not None and provided.get(fname):
            sub_provided = dict(provided[fname])
        if g in fm.provides:
            sub_provided = {**(sub_provided or {}), **_provided_tree(fm.provides[g])}
        self.plan_composite(fetch, g, fm.type_name, sub_sel, of.sub, (*path, key), sub_provided)

    def _key_for(self, type_name: str, g: str, h: str, provided: dict[str, Any] | None
                 ) -> str | None:
        for key in self.sg.types[type_name].keys.get(h, []):
            if all(self._local_tree(g, type_name, sel, provided)
                   for sel in parse_field_set(key).selections):
                return key
        return None

    def _local_tree(self, g: str, type_name: str, sel: SelectionNode,
                    provided: dict[str, Any] | None) -> bool:
        if not isinstance(sel, FieldNode):
            return False
        fname = sel.name.value
        if fname == "__typename":
            return True
        fm = self.sg.types[type_name].fields.get(fname)
        if fm is None or not (g in fm.graphs or (provided is not None and fname in provided)):
            return False
        if sel.selection_set is None:
            return True
        sub = provided.get(fname) if provided is not None and g not in fm.graphs else None
        return all(self._local_tree(g, fm.type_name, s, sub) for s in sel.selection_set.selections)

    def _choose_graph(self, fm_graphs: frozenset[str], chosen: Mapping[str, Any], g: str,
                      type_name: str, provided: dict[str, Any] | None) -> str:
        ordered = sorted(fm_graphs, key=lambda h: (h not in chosen, h == g, h))
        for h in ordered:
            if self._key_for(type_name, g, h, provided) is not None:
                return h
        if self._hops < MAX_KEY_HOPS:
            # No key of h is at hand in g: h is still reachable if another subgraph can
            # supply one of its keys first (g -> m -> h).
            for h in ordered:
                if self.sg.types[type_name].keys.get(h):
                    return h
        raise PlanningError(f'no @key of "{type_name}" lets subgraph "{g}" reach any of '
                            f'{sorted(fm_graphs)}')

    def _jump(self, fetch: Fetch, g: str, type_name: str,
              remote: list[tuple[str, list[tuple[FieldNode, tuple[DirectiveNode, ...]]]]],
              out: OutSel, path: tuple[str, ...], provided: dict[str, Any] | None) -> None:
        tm = self.sg.types[type_name]
        by_graph: dict[str, list[tuple[str, list[tuple[FieldNode, tuple[DirectiveNode, ...]]]]]]
        by_graph = {}
        for key, nodes in remote:
            fm = tm.fields[nodes[0][0].name.value]
            h = self._choose_graph(fm.graphs, by_graph, g, type_name, provided)
            by_graph.setdefault(h, []).append((key, nodes))
        out.add_field("__typename", "__typename")
        for h, items in by_graph.items():
            key_fields = self._key_for(type_name, g, h, provided)
            parent = fetch
            if key_fields is None:
                # Multi-hop: fetch h's key fields through other subgraphs, then jump to h.
                key_fields = self.sg.types[type_name].keys[h][0]
                self._hops += 1
                try:
                    parent = self._require_remote(fetch, g, type_name,
                                                  parse_field_set(key_fields), out, path,
                                                  provided)
                finally:
                    self._hops -= 1
            else:
                self._emit_field_set(g, type_name, parse_field_set(key_fields), out, provided)
            rep = OutSel()
            rep.add_field("__typename", "__typename")
            self._emit_field_set(g, type_name, parse_field_set(key_fields), rep, provided,
                                 source=out)
            for _, nodes in items:
                req = tm.fields[nodes[0][0].name.value].requires.get(h)
                if req is None:
                    continue
                req_sel = parse_field_set(req)
                if all(self._local_tree(g, type_name, s, provided) for s in req_sel.selections):
                    self._emit_field_set(g, type_name, req_sel, out, provided)
                else:
                    # Required fields live elsewhere: fetch them first, depend on that fetch.
                    parent = self._require_remote(fetch, g, type_name, req_sel, out, path,
                                                  provided)
                self._emit_field_set(g, type_name, req_sel, rep, None, force=True, source=out)
            child = next((c for c in parent.children if c.graph == h and c.path == path), None)
            if child is None:
                child = Fetch(graph=h, path=path)
                parent.children.append(child)
            existing = child.reps.get(type_name)
            if existing is None:
                child.reps[type_name] = rep
            else:
                _merge_out(existing, rep)
            sels: list[SelectionNode] = []
            for _, nodes in items:
                sels.extend(_with_conditions(n, conds) for n, conds in nodes)
            self.plan_object(child, h, type_name, sels, child.out.fragment(type_name), path, None,
                             entity_top=True)

    def _require_remote(self, fetch: Fetch, g: str, type_name: str, req_sel: SelectionSetNode,
                        out: OutSel, path: tuple[str, ...], provided: dict[str, Any] | None
                        ) -> Fetch:
        """Plan `req_sel` on the objects at `path`; the fetch a dependent fetch must follow.

        That is the deepest fetch at `path` below `fetch`: levels run one after another, so
        everything it and its ancestors fetch is merged before its children run."""
        self.plan_object(fetch, g, type_name, list(req_sel.selections), out, path, provided)
        deepest: tuple[int, Fetch] | None = None
        stack: list[tuple[int, Fetch]] = [(1, c) for c in fetch.children]
        while stack:
            depth, f = stack.pop()
            if f.path == path and (deepest is None or depth > deepest[0]):
                deepest = (depth, f)
            stack.extend((depth + 1, c) for c in f.children)
        if deepest is None:
            raise PlanningError(f'cannot fetch fields {print_ast(req_sel)} of "{type_name}"')
        return deepest[1]

    def _emit_field_set(self, g: str, type_name: str, sel: SelectionSetNode, out: OutSel,
                        provided: dict[str, Any] | None, force: bool = False,
                        source: OutSel | None = None) -> None:
        """Add a field set (key or @requires) to `out`.

        Into fetched data (`source` None) a field whose response key a client alias already
        took for another field goes under `_fk_<name>`; into a representation (`source` given)
        each field records which response key of `source` holds its value."""
        for s in sel.selections:
            if isinstance(s, InlineFragmentNode):
                cond = s.type_condition.name.value if s.type_condition else type_name
                self._emit_field_set(g, cond, s.selection_set, out.fragment(cond), provided, force,
                                     source.fragment(cond) if source is not None else None)
                continue
            if not isinstance(s, FieldNode):
                continue
            fname = s.name.value
            if fname == "__typename":
                out.add_field(fname, fname)
                continue
            fm = self.sg.types[type_name].fields[fname]
            composite = s.selection_set is not None
            src_key: str | None = None
            if source is None:
                key = fname
                taken = out.fields.get(fname)
                if taken is not None and (taken.name != fname or taken.args):
                    key = f"_fk_{fname}"
                of = out.add_field(key, fname, key if key != fname else None,
                                   composite=composite)
            else:
                src_key = _source_key(source, fname)
                of = out.add_field(fname, fname, composite=composite)
                of.source = src_key if src_key != fname else None
            if s.selection_set is not None and of.sub is not None:
                tm = self.sg.types[fm.type_name]
                if tm.kind != "object":
                    of.sub.add_field("__typename", "__typename")
                sub_source = None
                if source is not None and src_key is not None:
                    sub_source = source.fields[src_key].sub or OutSel()
                self._emit_field_set(g, fm.type_name, s.selection_set, of.sub, None, force,
                                     sub_source)


def _source_key(source: OutSel, fname: str) -> str:
    plain = source.fields.get(fname)
    if plain is not None and plain.name == fname and not plain.args:
        return fname
    alias = f"_fk_{fname}"
    return alias if alias in source.fields else fname


def _merge_out(into: OutSel, other: OutSel) -> None:
    for k, f in other.fields.items():
        mine = into.add_field(k, f.name, f.alias, f.args, f.directives, f.sub is not None)
        if f.sub is not None and mine.sub is not None:
            _merge_out(mine.sub, f.sub)
    for cond, sel in other.fragments.items():
        _merge_out(into.fragment(cond), sel)


def _with_conditions(node: FieldNode, conds: tuple[DirectiveNode, ...]) -> FieldNode:
    """The field carrying the @include/@skip it inherited from enclosing fragments."""
    own = _condition_directives(node)
    if conds == own:
        return node
    inherited = [c for c in conds if c not in own]
    return FieldNode(alias=node.alias, name=node.name, arguments=node.arguments,
                     directives=tuple(node.directives or ()) + tuple(inherited),
                     selection_set=node.selection_set)


# ---------------------------------------------------------------------------------------------
# Compilation into batches


def _levels(roots: list[Fetch]) -> list[list[Fetch]]:
    levels: list[list[Fetch]] = []
    current = roots
    while current:
        levels.append(current)
        current = [c for f in current for c in f.children]
    return levels


def _batches(level: list[Fetch], op_kind: str, var_defs: Mapping[str, str]) -> list[Batch]:
    by_graph: dict[str, list[Fetch]] = {}
    for f in level:
        by_graph.setdefault(f.graph, []).append(f)
    out: list[Batch] = []
    for graph, fetches in by_graph.items():
        used = sorted(set().union(*(f.variables for f in fetches)))
        defs = [var_defs[v] for v in used]
        if fetches[0].is_entity:
            parts = []
            for i, f in enumerate(fetches):
                f.index = i
                defs.insert(i, f"$r{i}:[_Any!]!")
                body = "".join(f"...on {t}{f.out.fragment(t).print()}" for t in f.reps)
                parts.append(f"_{i}:_entities(representations:$r{i}){{__typename {body}}}")
            query = "query(" + ",".join(defs) + "){" + " ".join(parts) + "}"
        else:
            # Root fetches of one graph at level 0 are one fetch (queries) by construction.
            assert len(fetches) == 1
            head = op_kind + ("(" + ",".join(defs) + ")" if defs else "")
            query = head + fetches[0].out.print()
        out.append(Batch(graph, fetches, query, used, fetches[0].is_entity))
    return out


def build_plan(sg: Supergraph, schema: GraphQLSchema, document: DocumentNode,
               operation_name: str | None) -> Plan:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        op = next((o for o in ops if o.name and o.name.value == operation_name), None)
        if op is None:
            raise OperationResolutionError(f'Unknown operation named "{operation_name}".')
    elif len(ops) == 1:
        op = ops[0]
    else:
        raise OperationResolutionError(
            "Must provide operation name if query contains multiple operations.")
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    kind = op.operation.value
    if kind == "subscription":
        raise OperationResolutionError("Subscriptions are not supported by this gateway.")
    root = schema.get_root_type(OperationType(kind))
    assert isinstance(root, GraphQLObjectType)
    b = _Builder(sg, schema, fragments)
    var_defs = {v.variable.name.value: print_ast(v) for v in op.variable_definitions or ()}
    fields = b.collect(root.name, op.selection_set.selections)
    introspection = any(nodes[0][0].name.value in INTROSPECTION_ROOTS for nodes in fields.values())
    roots: list[Fetch] = []
    for key, nodes in fields.items():
        fname = nodes[0][0].name.value
        if fname in INTROSPECTION_ROOTS or fname == "__typename":
            continue
        fm = sg.types[root.name].fields[fname]
        if kind == "mutation":
            # Consecutive mutation fields of one subgraph share a fetch; order is kept.
            target = roots[-1] if roots and roots[-1].graph in fm.graphs else None
        else:
            target = next((r for r in roots if r.graph in fm.graphs), None)
        if target is None:
            target = Fetch(graph=sorted(fm.graphs)[0], path=())
            roots.append(target)
        target.root_fields.append(key)
        b._emit_field(target, target.graph, root.name, key, nodes, target.out, (), None)
    groups: list[list[list[Batch]]] = []
    units = [[r] for r in roots] if kind == "mutation" else ([roots] if roots else [])
    for unit in units:
        groups.append([_batches(level, kind, var_defs) for level in _levels(unit)])
    intro_doc = None
    if introspection:
        intro_doc = DocumentNode(definitions=(op, *fragments.values()))
    plan = Plan(kind, op, fragments, groups, intro_doc)
    if not _has_conditions(document):
        plan.extra["shape_cache"] = {}
    plan.extra["introspection_keys"] = [k for k, nodes in fields.items()
                                        if nodes[0][0].name.value in INTROSPECTION_ROOTS]
    return plan


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


class QueryPlanner:
    """Parses, validates and plans operations; results are cached (LRU) by document + name."""

    def __init__(self, supergraph: Supergraph, cache_size: int = 1000,
                 validators: Iterable[Any] = ()) -> None:
        self.supergraph = supergraph
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




__all__ = ["Batch", "CachedOperation", "Fetch", "Plan", "PlanningError", "QueryPlanner",
           "ValidationFailed", "build_plan"]
