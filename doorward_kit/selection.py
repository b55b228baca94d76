"""What an operation asks for below a field, as graphql-core's execution will see it.

A resolver that loads its rows' relations in batches (workorders' board page, audit's entity
batch; issue 11) must load exactly what execution will then resolve: an address is contact
data, and reading it is an audited event, so it is read only when the operation really selects
it. This walks the operation with graphql-core's own field collection (aliases, fragments,
type conditions and `@skip`/`@include` with this request's variables), so "selected" here
means "will be executed" there, and not what the document merely mentions.
"""

from __future__ import annotations

from graphql import GraphQLObjectType, GraphQLResolveInfo, get_named_type
from graphql.execution.collect_fields import collect_sub_fields
from graphql.language import FieldNode
from strawberry.types import Info


class Selected:
    """One field of the operation: the nodes that select it (under every alias) and its object
    type. `field(name)` steps down to a child; None where the operation does not select it."""

    __slots__ = ("_children", "_info", "nodes", "type")

    def __init__(
        self, info: GraphQLResolveInfo, type_: GraphQLObjectType, nodes: list[FieldNode]
    ) -> None:
        self._info = info
        self.type = type_
        self.nodes = nodes
        self._children: dict[str, list[FieldNode]] | None = None

    @classmethod
    def of(cls, info: Info) -> Selected | None:
        """The field being resolved, if its (unwrapped) type is an object type."""
        raw: GraphQLResolveInfo = info._raw_info
        named = get_named_type(raw.return_type)
        if not isinstance(named, GraphQLObjectType):
            return None
        return cls(raw, named, list(raw.field_nodes))

    @classmethod
    def on(cls, info: Info, type_name: str) -> Selected | None:
        """The field being resolved, for its items of object type `type_name` (a field of
        abstract type, e.g. `_entities`: what is selected depends on the item's type)."""
        raw: GraphQLResolveInfo = info._raw_info
        named = raw.schema.get_type(type_name)
        if not isinstance(named, GraphQLObjectType):
            return None
        return cls(raw, named, list(raw.field_nodes))

    def _by_name(self) -> dict[str, list[FieldNode]]:
        """Sub-field nodes by field name (not response name: all aliases of a field together)."""
        if self._children is None:
            info = self._info
            collected = collect_sub_fields(
                info.schema, info.fragments, info.variable_values, self.type, self.nodes
            )
            children: dict[str, list[FieldNode]] = {}
            for nodes in collected.values():
                children.setdefault(nodes[0].name.value, []).extend(nodes)
            self._children = children
        return self._children

    def asks(self, name: str) -> bool:
        """Whether execution will resolve the child field `name` (under any alias)."""
        return name in self._by_name()

    def names(self) -> frozenset[str]:
        """Every child field execution will resolve (field names, `__typename` included)."""
        return frozenset(self._by_name())

    def field(self, name: str) -> Selected | None:
        """The child field `name` of object type, if selected; None otherwise."""
        nodes = self._by_name().get(name)
        if not nodes:
            return None
        named = get_named_type(self.type.fields[name].type)
        if not isinstance(named, GraphQLObjectType):
            return None
        return Selected(self._info, named, nodes)
