"""GraphQL execution for the subgraphs: graphql-core's, with a short path for plain leaf fields.

graphql-core 3.2 completes every field the same way: look up its definition, build a resolve
info, read its arguments, call the resolver (strawberry's wrapper, then the field's
`get_result`, then `getattr`), check the result for an awaitable, complete it through the
non-null wrapper, then serialize it. For a board that is ~400 leaf fields at audit (200 events
x `action outcome`) and ~200 at workorders, and it was most of each subgraph's execution CPU.

Most of those fields are *plain*: a strawberry field with no resolver, no field extension (so
no permission class) and no exception handler (strawberry marks these by building a
`_get_basic_result` resolver for them), whose type is a scalar or an enum. Such a field's value
is an attribute read, and completing it is serializing it. `FastExecutionContext` does exactly
that in one loop, and sends anything else, or anything unusual about a plain field (a None for
a non-null type, an awaitable, an exception value, a serializer that raises or answers None),
down graphql-core's own `execute_field`. Both are pure (an attribute read and a serializer), so
computing a value twice changes nothing, and every error, its message, its path and its
propagation, is graphql-core's own. A list of objects whose selected fields are all plain is
completed in one loop too, or, if any item is unusual, entirely by graphql-core.

What runs when is graphql-core's: every awaitable is gathered as it gathers them. Awaiting an
object's single awaitable field in place (no task) saved ~1 ms per board at workorders, but
the generated operations found what it changes: when a non-null error nulls the whole
response, graphql-core keeps only the errors raised before that moment, and a branch that ran
a loop turn earlier got its error in.

Resolver middleware (a strawberry extension with a `resolve` hook) sees every field: with one
in the schema the short path is off. tests/unit/kit/test_fast_execution.py runs a corpus of
operations through this context and graphql-core's own and compares the answers exactly.
"""

from __future__ import annotations

import builtins
from asyncio import gather
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, cast
from weakref import WeakKeyDictionary

from graphql import (
    GraphQLID,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLString,
    Undefined,
    is_enum_type,
    is_leaf_type,
)
from graphql.language import FieldNode
from graphql.pyutils import AwaitableOrValue, Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

# What a plain field is worked out once per object type (a schema's types live as long as it).
# A field: (read the value from the source, the leaf type, non-null?, the Python enum class of
# a strawberry enum and its names by member, filled as they are serialized, and whether the
# type is graphql-core's own String or ID, which serialize a `str` as itself).
_Plain = tuple[Callable[[Any], Any], GraphQLLeafType, bool, type | None, dict[Any, str], bool]
_PLAIN_FIELDS: WeakKeyDictionary[GraphQLObjectType, dict[str, _Plain]] = WeakKeyDictionary()

# Returned by `_plain_value` when graphql-core must complete the field itself.
_SLOW = object()
_TYPENAME = "__typename"


def _reader(field: StrawberryField, resolve: Callable[..., Any]) -> Callable[[Any], Any]:
    """How to read the field's value: what strawberry's `_get_basic_result` does
    (`field.get_result` -> `default_resolver(source, python_name)`), without its two calls
    when both are the stock ones."""
    if type(field).get_result is StrawberryField.get_result and (
        field.default_resolver is builtins.getattr
    ):
        name = field.python_name
        return lambda source: getattr(source, name)
    return lambda source: resolve(source, None)


def plain_fields(object_type: GraphQLObjectType) -> dict[str, _Plain]:
    """The object type's plain leaf fields by field name (see the module's docstring)."""
    found = _PLAIN_FIELDS.get(object_type)
    if found is not None:
        return found
    found = {}
    for name, field_def in object_type.fields.items():
        resolve = field_def.resolve
        strawberry_field = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if (
            resolve is None
            or not getattr(resolve, "_is_default", False)
            # Only strawberry's resolver for a basic field: `_resolver`/`_async_resolver` are
            # marked default too when a field has extensions (permissions) but no resolver.
            or resolve.__name__ != "_get_basic_result"
            or not isinstance(strawberry_field, StrawberryField)
            or not strawberry_field.is_basic_field
            or field_def.args
        ):
            continue
        field_type: GraphQLOutputType = field_def.type
        non_null = isinstance(field_type, GraphQLNonNull)
        leaf = field_type.of_type if non_null else field_type  # type: ignore[union-attr]
        if not is_leaf_type(leaf):
            continue
        leaf = cast(GraphQLLeafType, leaf)
        enum_class = getattr(leaf, "wrapped_cls", None) if is_enum_type(leaf) else None
        strings = leaf is GraphQLString or leaf is GraphQLID
        found[name] = (_reader(strawberry_field, resolve), leaf, non_null, enum_class, {}, strings)
    _PLAIN_FIELDS[object_type] = found
    return found


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's execution, with plain leaf fields completed in one loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # A resolve hook must see every field: no short path then.
        self._fast = manager is None or not manager.middlewares

    def _plain_value(self, plain: _Plain, source: Any) -> Any:
        """The field's completed value, or _SLOW where graphql-core must complete it."""
        read, leaf, non_null, enum_class, names, strings = plain
        try:
            value = read(source)
        except Exception:
            return _SLOW
        if value is None:
            return _SLOW if non_null else None
        if strings and type(value) is str:
            # serialize_string / serialize_id answer a str with itself, and a str is no
            # awaitable, exception or Undefined: the checks below (the most common leaf's
            # cost: audit's 200 events' `action`) would find nothing.
            return value
        is_member = enum_class is not None and type(value) is enum_class
        if is_member:
            # Serialized once per member: strawberry's serializer compares every value.
            name = names.get(value)
            if name is not None:
                return name
        if value is Undefined or isinstance(value, Exception) or self.is_awaitable(value):
            return _SLOW
        try:
            serialized = leaf.serialize(value)
        except Exception:
            return _SLOW
        if serialized is None or serialized is Undefined:
            return _SLOW
        if is_member:
            names[value] = serialized
        return serialized

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        fields: dict[str, list[FieldNode]],
    ) -> AwaitableOrValue[dict[str, Any]]:
        plain = plain_fields(parent_type) if self._fast else None
        if not plain:
            return super().execute_fields(parent_type, source_value, path, fields)
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        for response_name, field_nodes in fields.items():
            field_name = field_nodes[0].name.value
            if field_name == _TYPENAME:
                results[response_name] = parent_type.name
                continue
            spec = plain.get(field_name)
            if spec is not None:
                value = self._plain_value(spec, source_value)
                if value is not _SLOW:
                    results[response_name] = value
                    continue
            # graphql-core's own, as in its execute_fields.
            result = self.execute_field(
                parent_type, source_value, field_nodes, Path(path, response_name, parent_type.name)
            )
            if result is not Undefined:
                results[response_name] = result
                if is_awaitable(result):
                    awaitable_fields.append(response_name)
        if not awaitable_fields:
            return results
        return self._gathered(results, awaitable_fields)

    @staticmethod
    async def _gathered(results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
        # graphql-core's get_results: the awaitable fields of one object run concurrently.
        values = await gather(*(results[f] for f in awaitable_fields))
        results.update(zip(awaitable_fields, values, strict=True))
        return results

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_nodes: list[FieldNode],
        info: GraphQLResolveInfo,
        path: Path,
        result: AsyncIterable[Any] | Iterable[Any],
    ) -> AwaitableOrValue[list[Any]]:
        completed = self._plain_objects(return_type, field_nodes, result) if self._fast else None
        if completed is None:
            return super().complete_list_value(return_type, field_nodes, info, path, result)
        return completed

    def _plain_objects(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_nodes: list[FieldNode],
        result: AsyncIterable[Any] | Iterable[Any],
    ) -> list[Any] | None:
        """A list of objects whose selected fields are all plain, completed in one loop; None
        (graphql-core completes the whole list) if the list or any item is unusual."""
        item_type = return_type.of_type
        if isinstance(item_type, GraphQLNonNull):
            item_type = item_type.of_type
        if (
            not isinstance(item_type, GraphQLObjectType)
            or item_type.is_type_of is not None
            or not isinstance(result, list | tuple)
        ):
            return None
        plain = plain_fields(item_type)
        if not plain:
            return None
        selected: list[tuple[str, _Plain | None]] = []
        for response_name, nodes in self.collect_subfields(item_type, field_nodes).items():
            field_name = nodes[0].name.value
            spec = plain.get(field_name)
            if spec is None and field_name != _TYPENAME:
                return None
            selected.append((response_name, spec))
        type_name = item_type.name
        completed: list[Any] = []
        is_awaitable = self.is_awaitable
        for item in result:
            if item is None or isinstance(item, Exception) or is_awaitable(item):
                return None  # graphql-core's path (a null item is an error if non-null)
            row: dict[str, Any] = {}
            for response_name, spec in selected:
                if spec is None:
                    row[response_name] = type_name
                    continue
                value = self._plain_value(spec, item)
                if value is _SLOW:
                    return None
                row[response_name] = value
            completed.append(row)
        return completed
