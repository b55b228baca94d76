"""Static limits on operations (checked once per distinct document, then cached with the plan),
trusted documents, and per-user rate limiting."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql.type import GraphQLObjectType

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


class LimitExceeded(GraphQLError):
    """An operation over a configured limit; reported as a validation failure."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "GRAPHQL_VALIDATION_FAILED"})


@dataclass(frozen=True)
class Limits:
    max_depth: int = 15
    max_aliases: int = 30
    max_fields: int = 500
    max_cost: int = 10_000
    default_list_size: int = 10
    introspection: bool = False


@dataclass
class _Count:
    fields: int = 0
    aliases: int = 0
    depth: int = 0
    cost: int = 0
    introspection: bool = False


def check_document(schema: GraphQLSchema, document: DocumentNode, limits: Limits) -> None:
    """Raise LimitExceeded if any operation of `document` is over a limit."""
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    for op in document.definitions:
        if not isinstance(op, OperationDefinitionNode):
            continue
        root = schema.get_root_type(op.operation)
        count = _Count()
        _walk(schema, root, op.selection_set.selections, fragments, 1, 1, count, limits, set())
        if count.introspection and not limits.introspection:
            raise LimitExceeded("GraphQL introspection is not allowed here.")
        if count.depth > limits.max_depth:
            raise LimitExceeded(f"The operation is {count.depth} levels deep; the limit is "
                                f"{limits.max_depth}.")
        if count.aliases > limits.max_aliases:
            raise LimitExceeded(f"The operation uses {count.aliases} aliases; the limit is "
                                f"{limits.max_aliases}.")
        if count.fields > limits.max_fields:
            raise LimitExceeded(f"The operation selects {count.fields} fields; the limit is "
                                f"{limits.max_fields}.")
        if count.cost > limits.max_cost:
            raise LimitExceeded(f"The operation's estimated cost is {count.cost}; the limit is "
                                f"{limits.max_cost}.")


def _list_size(node: FieldNode, default: int) -> int:
    for a in node.arguments or ():
        if a.name.value in ("first", "last", "limit") and isinstance(a.value, IntValueNode):
            return max(1, int(a.value.value))
    return default


def _walk(schema: GraphQLSchema, parent: Any, selections: Any,
          fragments: dict[str, FragmentDefinitionNode], depth: int, multiplier: int,
          count: _Count, limits: Limits, seen: set[str]) -> None:
    for sel in selections:
        if isinstance(sel, FieldNode):
            count.fields += 1
            if sel.alias is not None:
                count.aliases += 1
            name = sel.name.value
            if name in INTROSPECTION_FIELDS:
                count.introspection = True
                continue  # introspection's own shape is bounded by the schema
            count.depth = max(count.depth, depth)
            field_type = None
            if isinstance(parent, GraphQLObjectType) or hasattr(parent, "fields"):
                fdef = parent.fields.get(name)
                field_type = fdef.type if fdef is not None else None
            mult = multiplier
            if field_type is not None and is_list_type(get_nullable_type(field_type)):
                mult = multiplier * _list_size(sel, limits.default_list_size)
            count.cost += mult
            if count.fields > limits.max_fields * 10:
                return  # far over: stop walking huge documents early
            if sel.selection_set is not None:
                child = get_named_type(field_type) if field_type is not None else None
                _walk(schema, child, sel.selection_set.selections, fragments, depth + 1, mult,
                      count, limits, seen)
        elif isinstance(sel, InlineFragmentNode):
            cond = schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
            _walk(schema, cond, sel.selection_set.selections, fragments, depth, multiplier, count,
                  limits, seen)
        elif isinstance(sel, FragmentSpreadNode):
            frag = fragments.get(sel.name.value)
            if frag is None or sel.name.value in seen:
                continue
            cond = schema.get_type(frag.type_condition.name.value)
            _walk(schema, cond, frag.selection_set.selections, fragments, depth, multiplier,
                  count, limits, seen | {sel.name.value})


class TrustedDocuments:
    """Allow-list of documents by sha256 (a JSON map, or an Apollo persisted query manifest)."""

    def __init__(self, documents: dict[str, str]) -> None:
        self.documents = documents

    @classmethod
    def load(cls, path: str | Path) -> TrustedDocuments:
        raw = json.loads(Path(path).read_text())
        docs: dict[str, str] = {}
        if isinstance(raw, dict) and isinstance(raw.get("operations"), list):
            for op in raw["operations"]:
                docs[op["id"]] = op["body"]
        elif isinstance(raw, dict):
            docs = {str(k): str(v) for k, v in raw.items()}
        else:
            raise ValueError("trusted documents file: expected a JSON object")
        for h, body in docs.items():
            if hashlib.sha256(body.encode()).hexdigest() != h:
                raise ValueError(f"trusted documents file: hash {h[:12]}... does not match its "
                                 f"document")
        return cls(docs)

    def resolve(self, query: str | None, sha256: str | None) -> str | None:
        """The allowed document text, or None when the request is not on the list."""
        if sha256 is not None:
            doc = self.documents.get(sha256)
            if doc is None or (query is not None and query != doc):
                return None
            return doc
        if query is not None and hashlib.sha256(query.encode()).hexdigest() in self.documents:
            return query
        return None


class RateLimiter:
    """Token bucket per key (user id, or client address for anonymous requests)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return ok
