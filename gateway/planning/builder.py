"""The fetch-dependency graph of one operation.

Each `Fetch` is one subgraph selection at one response path: a root fetch, or an `_entities`
fetch whose representations are read from the objects at its path. A fetch has one tree
parent (the fetch whose objects it extends) and may wait for more (`after`: the fetches that
bring the fields its @requires needs). Which subgraph answers a field is decided by the
query-graph search (`paths.PathFinder`): the cheapest route of key jumps, counting the fetches
the field's sub-selection would still need from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    NameNode,
    SelectionNode,
    VariableNode,
    Visitor,
    print_ast,
    visit,
)
from graphql.language import DirectiveNode, SelectionSetNode

from gateway.contexts import parse_selection
from gateway.planning.fields import (
    Collected,
    Conditions,
    FieldCollector,
    Occurrences,
    condition_directives,
)
from gateway.planning.paths import PathFinder, Provided, Route
from gateway.querygraph import Edge, EdgeKind, QueryGraph, Vertex
from gateway.sdl import parse_field_set
from gateway.supergraph import Supergraph

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})


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

    def add_field(
        self,
        key: str,
        name: str,
        alias: str | None = None,
        args: str = "",
        directives: str = "",
        composite: bool = False,
    ) -> OutField:
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


@dataclass(eq=False)
class Fetch:
    graph: str
    path: tuple[str, ...]  # response keys from the root to the parent objects (lists flattened)
    out: OutSel = field(default_factory=OutSel)
    # Entity fetches: per runtime type of the objects at `path`, the representation selection
    # (typename + key + requires) and the key part alone (a null key is never sent).
    reps: dict[str, OutSel] = field(default_factory=dict)
    keys: dict[str, OutSel] = field(default_factory=dict)
    # Runtime type -> the __typename its representation carries (an @interfaceObject stand-in
    # is asked for by the interface's name).
    rep_typename: dict[str, str] = field(default_factory=dict)
    parent: Fetch | None = None
    children: list[Fetch] = field(default_factory=list)
    after: list[Fetch] = field(default_factory=list)  # more fetches to wait for (@requires)
    variables: set[str] = field(default_factory=set)
    root_fields: list[str] = field(default_factory=list)  # response keys of a root fetch
    index: int = 0  # alias of this fetch's `_entities` inside its batch
    # An @interfaceObject fetch is asked for one runtime type only: its selection is written
    # on the interface, so objects of another type would be asked for fields they never need.
    io_type: str | None = None
    # @fromContext arguments this fetch fills per entity from an enclosing object.
    contexts: list[ContextInput] = field(default_factory=list)
    # The executor's per-type note of how to build a representation (gateway/executor.py
    # `_rep_shape`), made on first use and kept with the plan.
    rep_shapes: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_entity(self) -> bool:
        return bool(self.reps)

    @property
    def depends_on(self) -> list[Fetch]:
        return ([self.parent] if self.parent is not None else []) + self.after


@dataclass
class ContextSource:
    """Where one runtime shape finds a context value: the enclosing object `depth` response
    keys below the root whose __typename is one of `types`, read along `sel`."""

    depth: int
    types: frozenset[str]
    sel: OutSel


@dataclass
class ContextInput:
    """One contextual argument of one field of an entity fetch: the variable it is sent as."""

    variable: str  # without "$"; unique in the fetch (`__ctx<n>`, a name clients never use)
    type: str  # the argument's type in the subgraph
    type_name: str  # the entity type the field is on
    key: str  # the field's response key in the fetch
    argument: str
    sources: list[ContextSource] = field(default_factory=list)


@dataclass
class _Frame:
    """One object level being planned: what planning a context's selection there needs."""

    fetch: Fetch
    g: str
    type_name: str
    out: OutSel
    path: tuple[str, ...]
    provided: Provided


def _provided_tree(fields: str) -> dict[str, Any]:
    return _sel_tree(parse_field_set(fields))


def _sel_tree(sel: SelectionSetNode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sel.selections:
        if isinstance(s, FieldNode):
            out[s.name.value] = _sel_tree(s.selection_set) if s.selection_set else {}
        elif isinstance(s, InlineFragmentNode):
            # Kept under its type condition: `... on Book { title }` provides nothing on Film.
            cond = s.type_condition.name.value if s.type_condition else ""
            out.setdefault(f"...{cond}", {}).update(_sel_tree(s.selection_set))
    return out


def provided_for(provided: Provided, type_name: str) -> Provided:
    """What an @provides tree provides on objects of `type_name`."""
    if provided is None:
        return None
    out = {k: v for k, v in provided.items() if not k.startswith("...")}
    for k in ("...", f"...{type_name}"):
        out.update(provided.get(k) or {})
    return out


class _VarCollector(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)


def vars_in(nodes: Iterable[Any]) -> set[str]:
    vc = _VarCollector()
    for n in nodes:
        visit(n, vc)
    return vc.names


@dataclass
class _Jump:
    route: Route
    items: list[tuple[str, Occurrences]] = field(default_factory=list)
    abstract: list[SelectionNode] = field(default_factory=list)  # planned as the abstract type


class FetchGraphBuilder:
    def __init__(
        self,
        sg: Supergraph,
        qg: QueryGraph,
        finder: PathFinder,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        labels: frozenset[str] = frozenset(),
    ) -> None:
        self.sg = sg
        self.qg = qg
        self.finder = finder
        self.schema = schema
        self.collector = FieldCollector(schema, fragments)
        self.labels = labels
        self._recorders: list[set[Fetch]] = []
        self._frames: list[_Frame] = []
        self._ctx_types: dict[str, frozenset[str]] = {}
        self._ctx_count = 0

    def collect(
        self, type_name: str, selections: Iterable[SelectionNode], conds: Conditions = ()
    ) -> Collected:
        return self.collector.collect(type_name, selections, conds)

    def _touch(self, fetch: Fetch) -> None:
        for r in self._recorders:
            r.add(fetch)

    # -- locality -------------------------------------------------------------------------------

    def _local(
        self, g: str, type_name: str, fname: str, provided: Provided, entity_top: bool = False
    ) -> bool:
        if fname == "__typename":
            return True
        fm = self.sg.types[type_name].fields.get(fname)
        if fm is None:
            raise PlanningError(f'unknown field "{type_name}.{fname}"')
        if g in fm.requires or g in fm.context_args:
            # Only the top of an entity fetch carries the required fields in its representation
            # (and only an entity fetch can be given per-object context values).
            return entity_top
        if provided is not None and fname in provided:
            return True
        return g in self.sg.field_graphs(type_name, fname, self.labels)

    # -- planning -------------------------------------------------------------------------------

    def plan_composite(
        self,
        fetch: Fetch,
        g: str,
        type_name: str,
        selections: list[SelectionNode],
        out: OutSel,
        path: tuple[str, ...],
        provided: Provided,
    ) -> None:
        tm = self.sg.types[type_name]
        if tm.kind == "object":
            self.plan_object(
                fetch, g, type_name, selections, out, path, provided_for(provided, type_name)
            )
            return
        if g in tm.interface_objects:
            self.plan_interface_object(fetch, g, type_name, selections, out, path, provided)
            return
        out.add_field("__typename", "__typename")
        for concrete in sorted(self.sg.possible_types(type_name, g)):
            if self.schema.get_type(concrete) is None:
                continue  # @inaccessible: clients cannot select it
            fields = self.collect(concrete, selections)
            only_typename = all(
                k == "__typename" or nodes[0][0].name.value == "__typename"
                for k, nodes in fields.items()
            )
            if not fields or only_typename:
                continue
            self.plan_object(
                fetch,
                g,
                concrete,
                selections,
                out.fragment(concrete),
                path,
                provided_for(provided, concrete),
            )

    def plan_object(
        self,
        fetch: Fetch,
        g: str,
        type_name: str,
        selections: list[SelectionNode],
        out: OutSel,
        path: tuple[str, ...],
        provided: Provided,
        entity_top: bool = False,
    ) -> None:
        self._frames.append(_Frame(fetch, g, type_name, out, path, provided))
        try:
            self._plan_object(fetch, g, type_name, selections, out, path, provided, entity_top)
        finally:
            self._frames.pop()

    def _plan_object(
        self,
        fetch: Fetch,
        g: str,
        type_name: str,
        selections: list[SelectionNode],
        out: OutSel,
        path: tuple[str, ...],
        provided: Provided,
        entity_top: bool,
    ) -> None:
        remote: list[tuple[str, Occurrences]] = []
        for key, nodes in self.collect(type_name, selections).items():
            fname = nodes[0][0].name.value
            if fname in INTROSPECTION_ROOTS:
                continue
            if fname == "__typename" and g in self.sg.types[type_name].interface_objects:
                # An @interfaceObject stand-in does not know the runtime type: its owner does.
                remote.append((key, nodes))
                continue
            if not self._local(
                g, type_name, fname, provided, entity_top
            ) or not self._value_type_answered(g, type_name, fname, nodes, provided):
                remote.append((key, nodes))
                continue
            self.emit_field(fetch, g, type_name, key, nodes, out, path, provided)
        if remote:
            self._jump(fetch, g, type_name, remote, out, path, provided)

    def _value_type_answered(
        self, g: str, type_name: str, fname: str, nodes: Occurrences, provided: Provided
    ) -> bool:
        """A field returning a type without keys (a value type) can only be answered whole
        where it is fetched: no jump can start inside it. False when g cannot."""
        if fname == "__typename":
            return True
        target = self.sg.types[type_name].fields[fname].type_name
        sels = [
            s for n, _ in nodes if n.selection_set is not None for s in n.selection_set.selections
        ]
        if not sels or self._has_keys(target):
            return True
        sub_prov: Provided = None
        if provided is not None and provided.get(fname):
            sub_prov = provided[fname]
        return self._answers_all(g, target, sels, sub_prov, depth=0)

    def _has_keys(self, type_name: str) -> bool:
        tm = self.sg.types.get(type_name)
        if tm is None:
            return True  # a leaf
        types = (
            {type_name}
            if tm.kind == "object"
            else set().union(*tm.possible.values())
            if tm.possible
            else set()
        )
        return tm.kind not in ("object", "interface", "union") or any(
            any(self.sg.types[t].keys.values()) for t in types if t in self.sg.types
        )

    def _answers_all(
        self, g: str, type_name: str, sels: list[SelectionNode], provided: Provided, depth: int
    ) -> bool:
        tm = self.sg.types[type_name]
        types = [type_name] if tm.kind == "object" else sorted(self.sg.possible_types(type_name, g))
        for t in types:
            prov = provided_for(provided, t)
            for nodes in self.collect(t, sels).values():
                fname = nodes[0][0].name.value
                if fname == "__typename" or fname in INTROSPECTION_ROOTS:
                    continue
                if fname not in self.sg.types[t].fields or not self._local(g, t, fname, prov):
                    return False
                sub = [
                    s
                    for n, _ in nodes
                    if n.selection_set is not None
                    for s in n.selection_set.selections
                ]
                target = self.sg.types[t].fields[fname].type_name
                if sub and not self._has_keys(target) and depth < 20:
                    sub_prov = prov.get(fname) if prov else None
                    if not self._answers_all(g, target, sub, sub_prov or None, depth + 1):
                        return False
        return True

    def emit_field(
        self,
        fetch: Fetch,
        g: str,
        type_name: str,
        key: str,
        nodes: Occurrences,
        out: OutSel,
        path: tuple[str, ...],
        provided: Provided,
    ) -> None:
        self._touch(fetch)
        node = nodes[0][0]
        fname = node.name.value
        # Directives survive only if every occurrence carries the same ones.
        dir_texts = {" ".join(print_ast(d) for d in conds) for _, conds in nodes}
        directives = (" " + dir_texts.pop()) if len(dir_texts) == 1 and "" not in dir_texts else ""
        if directives:
            fetch.variables |= vars_in(nodes[0][1])
        args = ""
        if node.arguments:
            args = "(" + ",".join(print_ast(a) for a in node.arguments) + ")"
            fetch.variables |= vars_in(node.arguments)
        alias = key if key != fname else None
        if fname == "__typename":
            out.add_field(key, fname, alias, "", directives)
            return
        fm = self.sg.types[type_name].fields[fname]
        composite = self.sg.types.get(fm.type_name) is not None and self.sg.types[
            fm.type_name
        ].kind in ("object", "interface", "union")
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
        sub_provided: Provided = None
        if provided is not None and provided.get(fname):
            sub_provided = dict(provided[fname])
        if g in fm.provides:
            sub_provided = {**(sub_provided or {}), **_provided_tree(fm.provides[g])}
        self.plan_composite(fetch, g, fm.type_name, sub_sel, of.sub, (*path, key), sub_provided)

    # -- jumps ----------------------------------------------------------------------------------

    def _estimate(self, v: Vertex, fname: str, nodes: Occurrences) -> int:
        """Fetches the field's sub-selection would still need at v (one level deep)."""
        edge = self.qg.field_edge(v, fname)
        if edge is None:
            return 0
        fm = self.sg.types[v.type_name].fields[fname]
        cost = 1 if v.graph in fm.requires or v.graph in fm.context_args else 0
        sub_type = edge.tail.type_name
        if sub_type not in self.sg.types:
            return cost
        for n, _ in nodes:
            if n.selection_set is None:
                continue
            for sub in self.collect(sub_type, n.selection_set.selections).values():
                sname = sub[0][0].name.value
                if (
                    sname != "__typename"
                    and sname not in INTROSPECTION_ROOTS
                    and self.qg.field_edge(edge.tail, sname) is None
                    and sname in self.sg.types[sub_type].fields
                ):
                    cost += 1
        return cost

    def _choose(
        self,
        start: Vertex,
        type_name: str,
        key: str,
        nodes: Occurrences,
        routes: Mapping[Vertex, Route],
        chosen: Mapping[Vertex, _Jump],
    ) -> Vertex:
        fname = nodes[0][0].name.value
        if fname == "__typename":
            owners = [
                v
                for v in routes
                if v.graph not in self.sg.types[v.type_name].interface_objects and v != start
            ]
            if not owners:
                raise PlanningError(
                    f'no subgraph can tell the runtime type of "{type_name}" '
                    f'from subgraph "{start.graph}"'
                )
            return min(owners, key=lambda v: (routes[v].cost, v))
        best: tuple[int, Vertex] | None = None
        for target in self.finder.targets(type_name, fname, self.labels):
            route = routes.get(target)
            if target == start and self.sg.types[type_name].keys.get(start.graph):
                # A field that @requires others of its own subgraph: jump to itself by a key.
                route = self._self_route(start)
            if route is None or (target == start and not route.edges):
                continue
            cost = (0 if target in chosen else 2 * route.cost) + self._estimate(
                target, fname, nodes
            )
            if best is None or (cost, target) < best:
                best = (cost, target)
        if best is None:
            graphs = sorted({t.graph for t in self.finder.targets(type_name, fname, self.labels)})
            raise PlanningError(
                f'no @key of "{type_name}" lets subgraph "{start.graph}" '
                f'reach "{type_name}.{fname}" in any of {graphs}'
            )
        return best[1]

    def _jump(
        self,
        fetch: Fetch,
        g: str,
        type_name: str,
        remote: list[tuple[str, Occurrences]],
        out: OutSel,
        path: tuple[str, ...],
        provided: Provided,
    ) -> None:
        start = Vertex(type_name, g)
        routes = self.finder.routes(start, provided)
        jumps: dict[Vertex, _Jump] = {}
        for key, nodes in remote:
            target = self._choose(start, type_name, key, nodes, routes, jumps)
            route = routes[target] if target != start else self._self_route(start)
            jumps.setdefault(target, _Jump(route)).items.append((key, nodes))
        for target, jump in jumps.items():
            self._follow(fetch, g, type_name, out, path, provided, target, jump)

    def _follow(
        self,
        fetch: Fetch,
        g: str,
        type_name: str,
        out: OutSel,
        path: tuple[str, ...],
        provided: Provided,
        target: Vertex,
        jump: _Jump,
    ) -> None:
        """Emit the key jumps of a route, then the fields at its end."""
        after: set[Fetch] = set()
        requires = self._requires(target, jump)
        local_requires = False
        if requires is not None:
            if self.finder.fetchable(Vertex(type_name, g), requires, provided):
                local_requires = True
            else:
                # The required fields live elsewhere: plan them first, wait for what they used.
                recorder: set[Fetch] = set()
                self._recorders.append(recorder)
                try:
                    self.plan_object(
                        fetch, g, type_name, list(requires.selections), out, path, provided
                    )
                finally:
                    self._recorders.pop()
                after = recorder - {fetch}
        contexts = self._plan_contexts(target, jump, fetch)
        for _, waits in contexts:
            after |= waits
        cur_fetch, cur_out, cur_g, cur_type, cur_prov = fetch, out, g, type_name, provided
        for i, edge in enumerate(jump.route.edges):
            last = i == len(jump.route.edges) - 1
            key_sel = parse_field_set(edge.condition or "")
            cur_out.add_field("__typename", "__typename")
            self._emit_field_set(cur_g, cur_type, key_sel, cur_out, cur_prov)
            if i == 0 and local_requires:
                assert requires is not None
                self._emit_field_set(g, type_name, requires, out, provided)
            self._touch(cur_fetch)
            rep = OutSel()
            rep.add_field("__typename", "__typename")
            self._emit_field_set(cur_g, cur_type, key_sel, rep, cur_prov, source=cur_out)
            keys = OutSel()
            self._emit_field_set(cur_g, cur_type, key_sel, keys, cur_prov, source=cur_out)
            if last and requires is not None:
                self._emit_field_set(g, type_name, requires, rep, None, source=out)
            io_type = type_name if edge.tail.type_name != type_name else None
            child = self._child(
                cur_fetch, edge.tail.graph, path, fresh=bool(after) and last, io_type=io_type
            )
            child.after.extend(f for f in sorted(after, key=id) if f not in child.after)
            self._add_rep(child, type_name, rep, keys, edge.tail.type_name)
            cur_fetch, cur_g, cur_type, cur_prov = child, edge.tail.graph, edge.tail.type_name, None
            cur_out = child.out.fragment(edge.tail.type_name)
        if jump.abstract:
            self.plan_composite(cur_fetch, cur_g, cur_type, jump.abstract, cur_out, path, None)
            return
        sels: list[SelectionNode] = []
        for _, nodes in jump.items:
            sels.extend(_with_conditions(n, conds) for n, conds in nodes)
        self.plan_object(cur_fetch, cur_g, cur_type, sels, cur_out, path, None, entity_top=True)
        for inp, _ in contexts:
            self._attach_context(cur_fetch, cur_out, inp)

    # -- @fromContext -----------------------------------------------------------------------------

    def _plan_contexts(
        self, target: Vertex, jump: _Jump, fetch: Fetch
    ) -> list[tuple[ContextInput, set[Fetch]]]:
        """For each contextual argument of the jumped-to fields: the nearest enclosing object
        whose type sets the context, its selection planned there (fetched from wherever it
        lives), and the fetches the entity fetch must wait for."""
        out: list[tuple[ContextInput, set[Fetch]]] = []
        tm = self.sg.types[target.type_name]
        for key, nodes in jump.items:
            fm = tm.fields.get(nodes[0][0].name.value)
            if fm is None:
                continue
            for carg in fm.context_args.get(target.graph, ()):
                frame = self._context_frame(carg.context, carg.selection)
                inp = ContextInput("", carg.type, target.type_name, key, carg.name)
                waits: set[Fetch] = set()
                if frame is not None:
                    source, waits = self._plan_context_selection(frame, carg.selection, fetch)
                    inp.sources.append(source)
                out.append((inp, waits))
        return out

    def _context_types(self, context: str) -> frozenset[str]:
        hit = self._ctx_types.get(context)
        if hit is None:
            types: set[str] = set()
            for name, tm in self.sg.types.items():
                if context in tm.contexts:
                    types.add(name)
                    for members in tm.possible.values():
                        types |= members
            hit = self._ctx_types[context] = frozenset(types)
        return hit

    def _context_frame(self, context: str, selection: str) -> _Frame | None:
        """The nearest enclosing object that sets the context; of the fetches that planned
        that object, one that can read the selection itself (no extra fetch) if any."""
        types = self._context_types(context)
        nearest = next((f for f in reversed(self._frames) if f.type_name in types), None)
        if nearest is None:
            return None  # no enclosing object sets it: the argument is sent as null
        sel = self._branch(parse_selection(selection), nearest.type_name)
        for frame in reversed(self._frames):
            if frame.path == nearest.path and frame.type_name in types and self.finder.fetchable(
                Vertex(frame.type_name, frame.g), sel, frame.provided
            ):
                return frame
        return nearest

    def _branch(self, sel: SelectionSetNode, type_name: str) -> SelectionSetNode:
        """`... on A { x } ... on B { y }`: the branch for objects of `type_name`."""
        frags = [s for s in sel.selections if isinstance(s, InlineFragmentNode)]
        if not frags:
            return sel
        chosen = [
            f.selection_set
            for f in frags
            if f.type_condition is not None
            and self._context_branch_applies(f.type_condition.name.value, type_name)
        ]
        return chosen[0] if chosen else SelectionSetNode(selections=())

    def _plan_context_selection(
        self, frame: _Frame, selection: str, fetch: Fetch
    ) -> tuple[ContextSource, set[Fetch]]:
        sel = self._branch(parse_selection(selection), frame.type_name)
        frame.out.add_field("__typename", "__typename")
        types = {frame.type_name} | set().union(
            *self.sg.types[frame.type_name].possible.values()
        )
        # Planned at that level like a client's field (locally, or from the subgraphs that
        # resolve it), under an alias of its own: a client's alias may take the field's name
        # at this level, before or after this point.
        aliased = tuple(
            FieldNode(
                alias=NameNode(value=f"_ctx_{s.name.value}"),
                name=s.name,
                arguments=s.arguments,
                directives=(),
                selection_set=s.selection_set,
            )
            for s in sel.selections
            if isinstance(s, FieldNode)
        )
        recorder: set[Fetch] = set()
        self._recorders.append(recorder)
        try:
            self.plan_object(
                frame.fetch,
                frame.g,
                frame.type_name,
                list(aliased),
                frame.out,
                frame.path,
                frame.provided,
            )
        finally:
            self._recorders.pop()
        ancestors = set()
        f: Fetch | None = fetch
        while f is not None:
            ancestors.add(f)
            f = f.parent
        src = OutSel()
        for s in aliased:
            assert s.alias is not None
            self._emit_field_set(
                frame.g,
                frame.type_name,
                SelectionSetNode(selections=(FieldNode(name=s.name, arguments=s.arguments,
                                                       selection_set=s.selection_set),)),
                src,
                None,
                source=OutSel(),
            )
            src.fields[s.name.value].source = s.alias.value
        return ContextSource(len(frame.path), frozenset(types), src), recorder - ancestors

    def _context_branch_applies(self, cond: str, type_name: str) -> bool:
        if cond == type_name:
            return True
        tm = self.sg.types.get(cond)
        return tm is not None and any(type_name in m for m in tm.possible.values())

    def _attach_context(self, fetch: Fetch, out: OutSel, inp: ContextInput) -> None:
        """Send the argument as a variable of the entity fetch (one per field and argument)."""
        for known in fetch.contexts:
            if (known.type_name, known.key, known.argument) == (
                inp.type_name,
                inp.key,
                inp.argument,
            ):
                known.sources += [s for s in inp.sources if s not in known.sources]
                return
        # Unique in the operation: fetches of one subgraph may share one request.
        inp.variable = f"__ctx{self._ctx_count}"
        self._ctx_count += 1
        fetch.contexts.append(inp)
        of = out.fields.get(inp.key)
        if of is None:
            return
        arg = f"{inp.argument}:${inp.variable}"
        of.args = f"({arg})" if not of.args else of.args[:-1] + f",{arg})"

    def _self_route(self, v: Vertex) -> Route:
        key = self.sg.types[v.type_name].keys[v.graph][0]
        return Route((Edge(EdgeKind.KEY, v, v, "", key),))

    def plan_interface_object(
        self,
        fetch: Fetch,
        g: str,
        type_name: str,
        selections: list[SelectionNode],
        out: OutSel,
        path: tuple[str, ...],
        provided: Provided,
    ) -> None:
        """An entity interface in a subgraph that sees it as an object: its own fields here,
        the runtime type and type-conditioned fields through the interface's owner."""
        out.add_field("__typename", "__typename")  # the interface's name: shaped as it
        concrete_only: list[SelectionNode] = [
            s
            for s in selections
            if isinstance(s, InlineFragmentNode | FragmentSpreadNode)
            and self._condition_of(s) not in (None, type_name)
        ]
        self.plan_object(
            fetch,
            g,
            type_name,
            [s for s in selections if s not in concrete_only],
            out,
            path,
            provided,
        )
        if not concrete_only:
            return
        start = Vertex(type_name, g)
        routes = self.finder.routes(start, provided)
        owners = [
            v
            for v in routes
            if v != start and v.graph not in self.sg.types[v.type_name].interface_objects
        ]
        if not owners:
            raise PlanningError(
                f'no subgraph can tell the runtime type of "{type_name}" from subgraph "{g}"'
            )
        target = min(owners, key=lambda v: (routes[v].cost, v))
        jump = _Jump(routes[target], abstract=concrete_only)
        self._follow(fetch, g, type_name, out, path, provided, target, jump)

    def _condition_of(self, s: SelectionNode) -> str | None:
        if isinstance(s, InlineFragmentNode):
            return s.type_condition.name.value if s.type_condition else None
        if isinstance(s, FragmentSpreadNode):
            return self.collector.fragments[s.name.value].type_condition.name.value
        return None

    def _requires(self, target: Vertex, jump: _Jump) -> SelectionSetNode | None:
        """The @requires of the jumped-to fields at the target, as one field set."""
        sels: list[SelectionNode] = []
        tm = self.sg.types[target.type_name]
        for _, nodes in jump.items:
            fm = tm.fields.get(nodes[0][0].name.value)
            req = fm.requires.get(target.graph) if fm is not None else None
            if req is not None:
                sels.extend(parse_field_set(req).selections)
        return SelectionSetNode(selections=tuple(sels)) if sels else None

    def _child(
        self,
        parent: Fetch,
        graph: str,
        path: tuple[str, ...],
        fresh: bool,
        io_type: str | None = None,
    ) -> Fetch:
        if not fresh:
            for c in parent.children:
                if c.graph == graph and c.path == path and not c.after and c.io_type == io_type:
                    return c
        child = Fetch(graph=graph, path=path, parent=parent, io_type=io_type)
        parent.children.append(child)
        self._touch(child)
        return child

    @staticmethod
    def _add_rep(child: Fetch, type_name: str, rep: OutSel, keys: OutSel, as_type: str) -> None:
        if as_type != type_name:
            child.rep_typename[type_name] = as_type
        existing = child.reps.get(type_name)
        if existing is None:
            child.reps[type_name] = rep
            child.keys[type_name] = keys
        else:
            merge_out(existing, rep)
            merge_out(child.keys[type_name], keys)

    def _emit_field_set(
        self,
        g: str,
        type_name: str,
        sel: SelectionSetNode,
        out: OutSel,
        provided: Provided,
        source: OutSel | None = None,
    ) -> None:
        """Add a field set (key or @requires) to `out`.

        Into fetched data (`source` None) a field whose response key a client alias already
        took for another field goes under `_fk_<name>`; into a representation (`source` given)
        each field records which response key of `source` holds its value."""
        for s in sel.selections:
            if isinstance(s, InlineFragmentNode):
                cond = s.type_condition.name.value if s.type_condition else type_name
                target = out if cond == type_name else out.fragment(cond)
                src = source
                if source is not None and cond != type_name:
                    src = source.fragment(cond)
                self._emit_field_set(g, cond, s.selection_set, target, provided, src)
                continue
            if not isinstance(s, FieldNode):
                continue
            fname = s.name.value
            if fname == "__typename":
                out.add_field(fname, fname)
                continue
            fm = self.sg.types[type_name].fields[fname]
            composite = s.selection_set is not None
            args = "(" + ",".join(print_ast(a) for a in s.arguments) + ")" if s.arguments else ""
            src_key: str | None = None
            if source is None:
                key = fname
                taken = out.fields.get(fname)
                if taken is not None and (taken.name != fname or taken.args != args):
                    key = f"_fk_{fname}"
                of = out.add_field(
                    key, fname, key if key != fname else None, args, composite=composite
                )
            else:
                src_key = _source_key(source, fname, args)
                of = out.add_field(fname, fname, composite=composite)
                of.source = src_key if src_key != fname else None
            if s.selection_set is not None and of.sub is not None:
                tm = self.sg.types[fm.type_name]
                if tm.kind != "object":
                    of.sub.add_field("__typename", "__typename")
                sub_source = None
                if source is not None and src_key is not None:
                    sub_source = source.fields[src_key].sub if src_key in source.fields else None
                    sub_source = sub_source or OutSel()
                self._emit_field_set(g, fm.type_name, s.selection_set, of.sub, None, sub_source)


def _source_key(source: OutSel, fname: str, args: str = "") -> str:
    plain = source.fields.get(fname)
    if plain is not None and plain.name == fname and plain.args == args:
        return fname
    alias = f"_fk_{fname}"
    return alias if alias in source.fields else fname


def merge_out(into: OutSel, other: OutSel) -> None:
    for k, f in other.fields.items():
        mine = into.add_field(k, f.name, f.alias, f.args, f.directives, f.sub is not None)
        if f.source is not None:
            mine.source = f.source
        if f.sub is not None and mine.sub is not None:
            merge_out(mine.sub, f.sub)
    for cond, sel in other.fragments.items():
        merge_out(into.fragment(cond), sel)


def _with_conditions(node: FieldNode, conds: tuple[DirectiveNode, ...]) -> FieldNode:
    """The field carrying the @include/@skip it inherited from enclosing fragments."""
    own = condition_directives(node)
    if conds == own:
        return node
    inherited = [c for c in conds if c not in own]
    return FieldNode(
        alias=node.alias,
        name=node.name,
        arguments=node.arguments,
        directives=tuple(node.directives or ()) + tuple(inherited),
        selection_set=node.selection_set,
    )
