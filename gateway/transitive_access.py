"""Composition rule MISSING_TRANSITIVE_AUTH_REQUIREMENTS (Apollo's, for @requires and
@fromContext): a field whose value is computed from other data must itself require at least
what that data requires. Otherwise a caller refused `User.salary` could still learn it through
`User.taxBand @requires(fields: "salary")`, or through an argument filled from a context.

Checked on the composed supergraph (the access requirements merged across subgraphs).
"""

from __future__ import annotations

from graphql import FieldNode, InlineFragmentNode, SelectionSetNode

from gateway.contexts import parse_selection
from gateway.sdl import parse_field_set
from gateway.supergraph import Access, Scopes, Supergraph, merge_access

CODE = "MISSING_TRANSITIVE_AUTH_REQUIREMENTS"


def _implies(have: Scopes, need: Scopes) -> bool:
    """Every alternative the field accepts includes one alternative the data accepts."""
    first = [set(a) for a in have] or [set()]
    second = [set(a) for a in need] or [set()]
    return all(any(b <= a for b in second) for a in first)


def satisfies(have: Access, need: Access) -> bool:
    return (
        (have.authenticated or not need.authenticated)
        and _implies(have.scopes, need.scopes)
        and _implies(have.policies, need.policies)
    )


def transitive_access_errors(sg: Supergraph) -> list[str]:
    if not any(tm.access or any(fm.access for fm in tm.fields.values())
               for tm in sg.types.values()):
        return []  # Apollo checks only when the supergraph uses access directives
    errors: list[str] = []
    for tname, tm in sorted(sg.types.items()):
        for fname, fm in sorted(tm.fields.items()):
            have = merge_access([tm.access, fm.access])
            for graph, fields in sorted(fm.requires.items()):
                problem = _selection(sg, have, tname, parse_field_set(fields))
                if problem:
                    errors.append(_message(graph, tname, fname, problem, "@requires"))
            for graph, cargs in sorted(fm.context_args.items()):
                for carg in cargs:
                    for target in sorted(t for t, m in sg.types.items()
                                         if carg.context in m.contexts):
                        if not satisfies(have, sg.types[target].access):
                            problem = f'context {carg.context}'
                        else:
                            problem = _selection(sg, have, target,
                                                 parse_selection(carg.selection))
                        if problem:
                            errors.append(_message(graph, tname, fname, problem, "@fromContext"))
    return errors


def _message(graph: str, tname: str, fname: str, problem: str, directive: str) -> str:
    return (f'subgraph "{graph}": [{CODE}] Field "{tname}.{fname}" does not specify necessary '
            f"@authenticated, @requiresScopes and/or @policy auth requirements to access the "
            f"transitive {problem} data from {directive} selection set.")


def _selection(sg: Supergraph, have: Access, tname: str, sel: SelectionSetNode) -> str | None:
    tm = sg.types.get(tname)
    if tm is None:
        return None
    for s in sel.selections:
        if isinstance(s, InlineFragmentNode):
            cond = s.type_condition.name.value if s.type_condition else tname
            ct = sg.types.get(cond)
            if ct is not None and not satisfies(have, ct.access):
                return f'inline fragment type condition "{cond}"'
            if ct is not None and cond != tname and tname not in _members(sg, cond) \
                    and cond not in _members(sg, tname):
                continue  # the branch is for another type of a context
            problem = _selection(sg, have, cond, s.selection_set)
            if problem:
                return problem
            continue
        if not isinstance(s, FieldNode) or s.name.value == "__typename":
            continue
        fm = tm.fields.get(s.name.value)
        if fm is None:
            continue
        target = sg.types.get(fm.type_name)
        if not satisfies(have, fm.access) or (
                target is not None and not satisfies(have, target.access)):
            return f'field "{tname}.{s.name.value}"'
        if s.selection_set is not None:
            problem = _selection(sg, have, fm.type_name, s.selection_set)
            if problem:
                return problem
    return None


def _members(sg: Supergraph, abstract: str) -> set[str]:
    tm = sg.types.get(abstract)
    return set().union(*tm.possible.values()) if tm is not None and tm.possible else set()
