"""`@context` / `@fromContext` (Federation v2.8): reading, validation and supergraph text.

A subgraph names a context on types (`@context(name: "userContext")`); an argument of a field
elsewhere in the same subgraph takes its value from the nearest enclosing object of such a type
(`@fromContext(field: "$userContext { currency { isoCode } }")`). The argument disappears from
the supergraph's API: the gateway fills it per entity. In the supergraph the context is named
`<subgraph>__<name>` (`@context` on the type) and the field's `@join__field` lists its
`contextArguments` (join v0.5), as Apollo's composition writes them.

Validation follows Apollo's composition rules and error codes (CONTEXT_NAME_INVALID,
CONTEXT_NOT_SET, NO_CONTEXT_IN_SELECTION, CONTEXT_INVALID_SELECTION, CONTEXT_NO_RESOLVABLE_KEY,
CONTEXTUAL_ARGUMENT_NOT_CONTEXTUAL_IN_ALL_SUBGRAPHS); every message names the subgraph and the
type, field and argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import (
    FieldNode,
    GraphQLError,
    InlineFragmentNode,
    NonNullTypeNode,
    SelectionSetNode,
    StringValueNode,
    parse,
    print_ast,
)

from gateway.sdl import directives, named_type, str_arg

if TYPE_CHECKING:
    from gateway.composition import Subgraph, SubType

JOIN_URL_CONTEXT = "https://specs.apollo.dev/join/v0.5"
CONTEXT_URL = "https://specs.apollo.dev/context/v0.1"
CONTEXT_DEFINITIONS = (
    "directive @context(name: String!) repeatable on INTERFACE | OBJECT | UNION\n\n"
    "directive @context__fromContext(field: context__ContextFieldValue) on "
    "ARGUMENT_DEFINITION\n\n"
    "scalar context__ContextFieldValue\n\n"
)
JOIN_CONTEXT_ARGUMENT = (
    "input join__ContextArgument {\n  name: String!\n  type: String!\n  context: String!\n"
    "  selection: join__FieldValue!\n}\n\nscalar join__FieldValue\n\n"
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_REFERENCE = re.compile(r"^\s*\$([A-Za-z_][A-Za-z0-9_]*)(.*)$", re.S)


@dataclass(frozen=True)
class ContextArgument:
    """One argument a subgraph fills from a context: as `@join__field(contextArguments:)`."""

    name: str  # the argument
    type: str  # its type as written in the subgraph ("String!")
    context: str  # `<subgraph>__<name>` in the supergraph
    selection: str  # the field set read on the context's object, e.g. " { currency { id } }"


def normalized_selection(selection: str) -> str:
    """The selection in one spelling (ours and Apollo's supergraphs are compared)."""
    try:
        return " ".join(print_ast(parse_selection(selection)).split())
    except GraphQLError:
        return selection.strip()


def parse_selection(selection: str) -> SelectionSetNode:
    text = selection.strip()
    if not text.startswith("{"):
        text = "{" + text + "}"
    op = parse(text, no_location=True).definitions[0]
    return op.selection_set  # type: ignore[attr-defined]


def context_names(node: Any) -> list[str]:
    return [n for d in directives(node, "context") if (n := str_arg(d, "name")) is not None]


def from_context(arg_node: Any) -> str | None:
    """The `field:` of an argument's @fromContext, or None."""
    for d in directives(arg_node, "fromContext"):
        return str_arg(d, "field") or ""
    return None


def supergraph_context(subgraph: str, name: str) -> str:
    return f"{subgraph}__{name}"


def _where(tname: str, fname: str, aname: str) -> str:
    return f'"{tname}.{fname}({aname}:)"'


def validate_subgraph(sg: Subgraph) -> list[str]:
    """Apollo's checks of one subgraph's @context / @fromContext uses."""
    errors: list[str] = []
    pre = f'subgraph "{sg.name}": '
    setters: dict[str, list[str]] = {}  # context name -> types setting it
    for st in sg.types.values():
        for name in st.contexts:
            if "_" in name:
                errors.append(f'{pre}[CONTEXT_NAME_INVALID] Context name "{name}" on type '
                              f'"{st.name}" may not contain an underscore.')
            elif not _NAME.match(name):
                errors.append(f'{pre}[CONTEXT_NAME_INVALID] Context name "{name}" on type '
                              f'"{st.name}" is invalid. It should have only alphanumeric '
                              f'characters.')
            setters.setdefault(name, []).append(st.name)
    for st in sg.types.values():
        if st.kind not in ("object", "interface"):
            continue
        for fname, sf in st.fields.items():
            for a in getattr(sf.node, "arguments", None) or ():
                ref = from_context(a)
                if ref is None:
                    continue
                where = _where(st.name, fname, a.name.value)
                if st.kind != "object" or st.interface_object:
                    errors.append(f'{pre}[CONTEXT_NOT_SET] @fromContext argument cannot be used '
                                  f'on a field that exists on an abstract type {where}.')
                    continue
                if _implements_field(sg, st, fname):
                    errors.append(f'{pre}[CONTEXT_NOT_SET] @fromContext argument cannot be used '
                                  f'on a field implementing an interface field {where}.')
                    continue
                if a.default_value is not None:
                    errors.append(f'{pre}[CONTEXT_NOT_SET] @fromContext arguments may not have a '
                                  f'default value: {where}.')
                    continue
                m = _REFERENCE.match(ref)
                if m is None:
                    errors.append(f'{pre}[NO_CONTEXT_IN_SELECTION] @fromContext argument does '
                                  f'not reference a context "{ref}" at {where}.')
                    continue
                name, selection = m.group(1), m.group(2)
                if name not in setters:
                    errors.append(f'{pre}[CONTEXT_NOT_SET] Context "{name}" is used at location '
                                  f'{where} but is never set.')
                    continue
                errors += [f'{pre}[CONTEXT_INVALID_SELECTION] Context "{name}" is used in '
                           f'{where} but the selection is invalid: {problem}'
                           for problem in _selection_problems(sg, setters[name], selection,
                                                              print_ast(a.type))]
                if not any(ok for _, ok in st.keys):
                    errors.append(f'{pre}[CONTEXT_NO_RESOLVABLE_KEY] Object "{st.name}" has no '
                                  f'resolvable key but has a field with a contextual argument '
                                  f'{where}.')
    return errors


def _implements_field(sg: Subgraph, st: SubType, fname: str) -> bool:
    return any(fname in sg.types[i].fields for i in st.interfaces if i in sg.types)


def _selection_problems(sg: Subgraph, locations: list[str], selection: str,
                        expected: str) -> list[str]:
    try:
        sel = parse_selection(selection)
    except GraphQLError as exc:
        return [exc.message]
    fields = [s for s in sel.selections if isinstance(s, FieldNode)]
    frags = [s for s in sel.selections if isinstance(s, InlineFragmentNode)]
    if not sel.selections:
        return ["no selection is made"]
    if len(sel.selections) != len(fields) + len(frags):
        return ["fragment spread is not allowed"]
    if fields and frags:
        return ["selection should only contain a single field or at least one inline fragment"]
    if len(fields) > 1:
        return ["multiple selections are made"]
    if any(f.type_condition is None for f in frags):
        return ["inline fragments must have type conditions"]
    conds = [f.type_condition.name.value for f in frags if f.type_condition is not None]
    if len(set(conds)) != len(conds):
        return ["type conditions have same name"]
    problems: list[str] = []
    for loc in locations:
        if fields:
            problems += _path_problems(sg, loc, sel, loc, expected)
            continue
        match = [f for f in frags if f.type_condition is not None and
                 _applies(sg, f.type_condition.name.value, loc)]
        if not match:
            problems.append(f'no type condition matches the location "{loc}"')
            continue
        for f in match:
            problems += _path_problems(sg, f.type_condition.name.value,
                                       f.selection_set, loc, expected)
    for c in conds:
        if not any(_applies(sg, c, loc) for loc in locations):
            problems.append(f'type condition "{c}" is never used.')
    return problems


def _applies(sg: Subgraph, cond: str, loc: str) -> bool:
    if cond == loc:
        return True
    st = sg.types.get(loc)
    ct = sg.types.get(cond)
    if st is None or ct is None:
        return False
    # A context set on an interface or union reaches its object types.
    return cond in _members(sg, loc)


def _members(sg: Subgraph, abstract: str) -> set[str]:
    st = sg.types[abstract]
    if st.kind == "union":
        return set(st.members)
    return {t.name for t in sg.types.values() if abstract in t.interfaces}


def _path_problems(sg: Subgraph, tname: str, sel: SelectionSetNode, loc: str,
                   expected: str) -> list[str]:
    """The selection must be one chain of fields that exist on `tname`, ending in a value of
    the argument's type. As Apollo: the chain's type keeps its lists but not its non-nulls (an
    object may lack the context), so a non-null argument never matches."""
    node = sel
    current = tname
    lists = 0
    while True:
        fields = [s for s in node.selections if isinstance(s, FieldNode)]
        if len(fields) != len(node.selections) or len(fields) != 1:
            return ["multiple fields could be selected"] if len(fields) > 1 else []
        f = fields[0]
        if f.alias is not None:
            return ["aliases are not allowed in the selection"]
        if f.directives:
            return ["directives are not allowed in the selection"]
        st = sg.types.get(current)
        if st is None or f.name.value not in st.fields:
            return [f'the selection is invalid for type {loc}: field "{current}.{f.name.value}" '
                    f'does not exist']
        ftype = st.fields[f.name.value].node.type
        lists += print_ast(ftype).count("[")
        if f.selection_set is None:
            resolved = "[" * lists + named_type(ftype) + "]" * lists
            if resolved != expected:
                return [f'the type of the selection "{resolved}" does not match the expected '
                        f'type "{expected}"']
            return []
        current = named_type(ftype)
        node = f.selection_set


def contextual_arguments(sg: Subgraph, tname: str, fname: str) -> list[ContextArgument]:
    """The field's contextual arguments in this subgraph, as the supergraph writes them."""
    sf = sg.types[tname].fields[fname]
    out: list[ContextArgument] = []
    for a in getattr(sf.node, "arguments", None) or ():
        ref = from_context(a)
        m = _REFERENCE.match(ref) if ref is not None else None
        if m is None:
            continue
        out.append(ContextArgument(a.name.value, print_ast(a.type),
                                   supergraph_context(sg.name, m.group(1)), m.group(2)))
    return out


def join_field_argument(args: list[ContextArgument]) -> str:
    def lit(v: str) -> str:
        return print_ast(StringValueNode(value=v))

    items = [f"{{context: {lit(a.context)}, name: {lit(a.name)}, type: {lit(a.type)}, "
             f"selection: {lit(a.selection)}}}" for a in args]
    return "contextArguments: [" + ", ".join(items) + "]"


def contextual_argument_conflicts(tname: str, fname: str,
                                  defs: list[tuple[Subgraph, Any]]) -> list[str]:
    """An argument contextual in one subgraph leaves the supergraph; another subgraph must
    not need it (non-null without a default there), as Apollo's composition rules."""
    contextual: dict[str, list[str]] = {}
    plain: dict[str, list[str]] = {}
    for sg, sf in defs:
        for a in getattr(sf.node, "arguments", None) or ():
            if from_context(a) is not None:
                contextual.setdefault(a.name.value, []).append(sg.name)
            elif isinstance(a.type, NonNullTypeNode) and a.default_value is None:
                plain.setdefault(a.name.value, []).append(sg.name)
    return [f'[CONTEXTUAL_ARGUMENT_NOT_CONTEXTUAL_IN_ALL_SUBGRAPHS] Argument '
            f'{_where(tname, fname, n)} is contextual in subgraph(s) '
            + ", ".join(f'"{g}"' for g in subs) + " but required (non-null, no default) "
            "without @fromContext in subgraph(s) " + ", ".join(f'"{g}"' for g in plain[n])
            for n, subs in contextual.items() if n in plain]


def unset_context_errors(sgs: list[Subgraph], roots: list[str]) -> list[str]:
    """A field with a contextual argument must be reached only inside an object that sets the
    context: a query path from a root that arrives at its type outside every such object
    cannot be answered (Apollo's satisfiability: "could not find a match for required
    context"). Types are followed through every subgraph's fields and abstract types."""
    edges: dict[str, list[tuple[str, str]]] = {}  # type -> (field or "...", target type)
    for sg in sgs:
        for st in sg.types.values():
            for fname, sf in st.fields.items():
                if st.kind in ("object", "interface") and not sf.external:
                    edges.setdefault(st.name, []).append((fname, named_type(sf.node.type)))
            if st.kind == "union":
                edges.setdefault(st.name, []).extend(("...", m) for m in st.members)
            for i in st.interfaces:
                edges.setdefault(i, []).append(("...", st.name))
    errors: list[str] = []
    for sg in sgs:
        setters: dict[str, set[str]] = {}
        for st in sg.types.values():
            for name in st.contexts:
                inside = setters.setdefault(name, set())
                inside.add(st.name)
                inside |= {t for f, t in edges.get(st.name, ()) if f == "..."}
        for st in sg.types.values():
            for fname in st.fields:
                for carg in contextual_arguments(sg, st.name, fname):
                    name = carg.context[len(sg.name) + 2:]
                    path = _path_outside(edges, roots, setters.get(name, set()), st.name)
                    if path is not None:
                        errors.append(
                            f'subgraph "{sg.name}": cannot satisfy '
                            f'{_where(st.name, fname, carg.name)}: the query path '
                            f'"{path}" reaches "{st.name}" outside every object that sets '
                            f'context "{name}" (could not find a match for required context)')
    return errors


def _path_outside(edges: Mapping[str, list[tuple[str, str]]], roots: list[str],
                  blocked: set[str], target: str) -> str | None:
    seen = {r: r for r in roots if r not in blocked}
    queue = list(seen)
    while queue:
        t = queue.pop(0)
        if t == target:
            return seen[t]
        for f, nxt in edges.get(t, ()):
            if nxt in seen or nxt in blocked:
                continue
            seen[nxt] = seen[t] + ("" if f == "..." else f".{f}")
            queue.append(nxt)
    return None


def read_context_arguments(value: Any) -> tuple[ContextArgument, ...]:
    """`contextArguments:` of a supergraph `@join__field` (a list of input objects)."""
    from graphql import ListValueNode, ObjectValueNode

    if not isinstance(value, ListValueNode):
        return ()
    out = []
    for item in value.values:
        if not isinstance(item, ObjectValueNode):
            continue
        f: Mapping[str, str] = {
            o.name.value: o.value.value for o in item.fields
            if isinstance(o.value, StringValueNode)
        }
        out.append(ContextArgument(f.get("name", ""), f.get("type", ""), f.get("context", ""),
                                   normalized_selection(f.get("selection", ""))))
    return tuple(out)


__all__ = ["CONTEXT_DEFINITIONS", "CONTEXT_URL", "JOIN_CONTEXT_ARGUMENT", "JOIN_URL_CONTEXT",
           "ContextArgument", "context_names", "contextual_argument_conflicts",
           "contextual_arguments", "from_context", "join_field_argument",
           "normalized_selection", "parse_selection", "read_context_arguments",
           "validate_subgraph"]
