"""@authenticated, @requiresScopes and @policy against the Doorward principal.

Like Apollo Router: fields the caller may not see are removed from the operation before
planning (no subgraph is asked for them), and the response has null there with an
UNAUTHORIZED_FIELD_OR_TYPE error (a non-null field's null goes to its parent). Deny by default:
without a verified principal nothing protected is granted, and an unknown policy is refused.

What a Doorward principal holds: `authenticated` once its access token verified; each of its
roles as a scope (`ADMIN`, `DISPATCHER`, ...); the policies `role:<ROLE>` for each role.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLSchema,
    NameNode,
    SelectionSetNode,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_named_type,
    visit,
)
from graphql.language.visitor import REMOVE

from doorward_kit.auth import Principal
from gateway.supergraph import Access, Supergraph


@dataclass(frozen=True)
class Grants:
    authenticated: bool = False
    scopes: frozenset[str] = frozenset()
    policies: frozenset[str] = frozenset()

    def allow(self, access: Access) -> bool:
        if access.authenticated and not self.authenticated:
            return False
        if access.scopes and not any(all(s in self.scopes for s in alt) for alt in access.scopes):
            return False
        return not access.policies or any(
            all(p in self.policies for p in alt) for alt in access.policies
        )


NOBODY = Grants()


def grants_of(principal: object | None) -> Grants:
    if not isinstance(principal, Principal):
        return NOBODY
    roles = frozenset(str(r) for r in principal.roles)
    return Grants(True, roles, frozenset(f"role:{r}" for r in roles))


@dataclass(frozen=True)
class Protected:
    node: FieldNode
    access: tuple[Access, ...]  # all must be granted (the field's and its type's)


def protected_fields(
    sg: Supergraph, schema: GraphQLSchema, document: DocumentNode
) -> list[Protected]:
    """Every field node of the document that needs more than an anonymous caller has."""
    out: list[Protected] = []
    type_info = TypeInfo(schema)

    class _V(Visitor):
        def enter_field(self, node: FieldNode, *_: object) -> None:
            parent = type_info.get_parent_type()
            fdef = type_info.get_field_def()
            if parent is None or fdef is None:
                return
            needs: list[Access] = []
            tm = sg.types.get(parent.name)
            fm = tm.fields.get(node.name.value) if tm is not None else None
            if fm is not None and fm.access:
                needs.append(fm.access)
            target = sg.types.get(get_named_type(fdef.type).name)
            if target is not None and target.access:
                needs.append(target.access)
            if needs:
                out.append(Protected(node, tuple(needs)))

    visit(document, TypeInfoVisitor(type_info, _V()))
    return out


def denied(protected: Iterable[Protected], grants: Grants) -> frozenset[int]:
    """Ids of the field nodes the caller may not see."""
    return frozenset(id(p.node) for p in protected if not all(grants.allow(a) for a in p.access))


def without(document: DocumentNode, denied_ids: frozenset[int]) -> DocumentNode:
    """The document with the denied fields removed (an emptied selection keeps __typename)."""

    class _V(Visitor):
        def enter_field(self, node: FieldNode, *_: object) -> object:
            return REMOVE if id(node) in denied_ids else None

        def leave_selection_set(self, node: SelectionSetNode, *_: object) -> object:
            if node.selections:
                return None
            return SelectionSetNode(selections=(FieldNode(name=NameNode(value="__typename")),))

    return visit(document, _V())
