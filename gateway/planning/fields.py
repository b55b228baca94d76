"""The field collector shared by planning: fields of a type by response key."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from graphql import (
    DirectiveNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionNode,
    is_abstract_type,
)

Conditions = tuple[DirectiveNode, ...]
# response key -> every occurrence of the field with the @include/@skip guarding it
Occurrences = list[tuple[FieldNode, Conditions]]
Collected = OrderedDict[str, Occurrences]


def condition_directives(node: SelectionNode) -> Conditions:
    return tuple(d for d in node.directives or () if d.name.value in ("include", "skip"))


@dataclass
class FieldCollector:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]

    def applies(self, cond: str | None, type_name: str) -> bool:
        """Does a fragment on `cond` apply to objects of `type_name` (a type or interface)?"""
        if cond is None or cond == type_name:
            return True
        ct = self.schema.get_type(cond)
        ot = self.schema.get_type(type_name)
        if ct is None or ot is None or not is_abstract_type(ct):
            return False
        return self.schema.is_sub_type(ct, ot)  # type: ignore[arg-type]

    def collect(
        self, type_name: str, selections: Iterable[SelectionNode], conds: Conditions = ()
    ) -> Collected:
        out: Collected = OrderedDict()
        self._collect(type_name, selections, conds, out)
        return out

    def _collect(
        self, type_name: str, selections: Iterable[SelectionNode], conds: Conditions, out: Collected
    ) -> None:
        for sel in selections:
            if isinstance(sel, FieldNode):
                key = sel.alias.value if sel.alias else sel.name.value
                out.setdefault(key, []).append((sel, conds + condition_directives(sel)))
            elif isinstance(sel, InlineFragmentNode):
                cond = sel.type_condition.name.value if sel.type_condition else None
                if self.applies(cond, type_name):
                    self._collect(
                        type_name,
                        sel.selection_set.selections,
                        conds + condition_directives(sel),
                        out,
                    )
            elif isinstance(sel, FragmentSpreadNode):
                frag = self.fragments[sel.name.value]
                if self.applies(frag.type_condition.name.value, type_name):
                    self._collect(
                        type_name,
                        frag.selection_set.selections,
                        conds + condition_directives(sel),
                        out,
                    )
