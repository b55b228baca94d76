"""SDL helpers shared by composition (subgraph SDLs) and the supergraph model (join SDL)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from graphql import (
    BooleanValueNode,
    DirectiveNode,
    EnumTypeDefinitionNode,
    EnumTypeExtensionNode,
    EnumValueNode,
    InputObjectTypeDefinitionNode,
    InputObjectTypeExtensionNode,
    InterfaceTypeDefinitionNode,
    InterfaceTypeExtensionNode,
    ListTypeNode,
    NamedTypeNode,
    NonNullTypeNode,
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
    ScalarTypeDefinitionNode,
    ScalarTypeExtensionNode,
    SelectionSetNode,
    StringValueNode,
    TypeNode,
    UnionTypeDefinitionNode,
    UnionTypeExtensionNode,
    ValueNode,
    parse,
)

ROOT_KINDS = ("query", "mutation", "subscription")
ROOT_NAMES = {"query": "Query", "mutation": "Mutation", "subscription": "Subscription"}

KIND: dict[type, str] = {
    ObjectTypeDefinitionNode: "object",
    ObjectTypeExtensionNode: "object",
    InterfaceTypeDefinitionNode: "interface",
    InterfaceTypeExtensionNode: "interface",
    UnionTypeDefinitionNode: "union",
    UnionTypeExtensionNode: "union",
    EnumTypeDefinitionNode: "enum",
    EnumTypeExtensionNode: "enum",
    InputObjectTypeDefinitionNode: "input",
    InputObjectTypeExtensionNode: "input",
    ScalarTypeDefinitionNode: "scalar",
    ScalarTypeExtensionNode: "scalar",
}


class CompositionError(Exception):
    """Composition failed; `errors` holds one message per problem, each naming subgraphs."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("composition failed:\n- " + "\n- ".join(errors))
        self.errors = errors


@lru_cache(maxsize=1024)
def parse_field_set(fields: str) -> SelectionSetNode:
    """A federation FieldSet ("id", "sku package { id }") as a selection set."""
    op = parse("{" + fields + "}", no_location=True).definitions[0]
    return op.selection_set  # type: ignore[attr-defined]


def fed_name(name: str) -> str:
    return name[len("federation__") :] if name.startswith("federation__") else name


def directives(node: Any, name: str) -> list[DirectiveNode]:
    return [d for d in (node.directives or ()) if fed_name(d.name.value) == name]


def arg(directive: DirectiveNode, name: str) -> ValueNode | None:
    for a in directive.arguments or ():
        if a.name.value == name:
            return a.value
    return None


def str_arg(directive: DirectiveNode, name: str) -> str | None:
    v = arg(directive, name)
    return v.value if isinstance(v, StringValueNode | EnumValueNode) else None


def bool_arg(directive: DirectiveNode, name: str, default: bool) -> bool:
    v = arg(directive, name)
    return v.value if isinstance(v, BooleanValueNode) else default


def named_type(t: TypeNode) -> str:
    while isinstance(t, NonNullTypeNode | ListTypeNode):
        t = t.type
    assert isinstance(t, NamedTypeNode)
    return t.name.value
