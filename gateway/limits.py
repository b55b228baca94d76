"""Static limits on operations (checked once per distinct document, before validation and
planning), trusted documents, and per-user rate limiting.

The limits walk is one pass over the document: every fragment is summarised once (fields,
aliases, directives, depth, cost, and the tree of response names its fields merge into) and a
spread adds that summary instead of walking the fragment again, so fragments that spread the
previous one twice cost one visit each, not 2^n. Every count only grows as the walk proceeds,
so the walk stops at the first one over its limit. The response-name tree bounds what
graphql-core's OverlappingFieldsCanBeMerged validation will do: it compares every pair of fields
that merge into one response path, so a few hundred copies of one field are ~10^5 comparisons.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    SelectionNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
    parse,
)

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
SLICING_ARGUMENTS = ("first", "last")


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
    default_list_size: int = 10  # a list field without `first`/`last`
    introspection: bool = False
    max_directives: int = 50
    max_tokens: int = 5_000  # lexical tokens of one document (and, separately, comments)
    max_document_chars: int = 100_000
    # The contract's Relay rule: `first` defaults to 50 and is capped at 200.
    page_size_default: int = 50
    page_size_max: int = 200
    # Pairs of fields merging into one response path (what field-merge validation compares).
    max_field_merges: int = 2_000


def parse_document(query: str, limits: Limits, max_tokens: int | None = None) -> DocumentNode:
    """Parse with the token, comment and length limits: a long document is refused while it is
    being read (after `max_tokens` tokens, default `limits.max_tokens`), not after."""
    tokens = limits.max_tokens if max_tokens is None else max_tokens
    return parse(
        query,
        max_lexical_tokens=tokens,
        max_comments=tokens,
        max_source_length=limits.max_document_chars,
    )


class _Merged:
    """One response path: how many field nodes merge into it, and the paths below it."""

    __slots__ = ("below", "count")

    def __init__(self, count: int = 0, below: dict[str, _Merged] | None = None) -> None:
        self.count = count
        self.below = below


def _merge(into: dict[str, _Merged], other: Mapping[str, _Merged]) -> int:
    """Add `other`'s paths to `into` (copying, `other` may be a memoised fragment's); returns
    the new pairs of fields that now merge into one path."""
    pairs = 0
    for key, theirs in other.items():
        mine = into.get(key)
        if mine is None:
            mine = into[key] = _Merged()
        pairs += mine.count * theirs.count
        mine.count += theirs.count
        if theirs.below:
            if mine.below is None:
                mine.below = {}
            pairs += _merge(mine.below, theirs.below)
    return pairs


@dataclass
class _Summary:
    """A selection set's counts relative to itself (its own fields are at depth 1, cost with a
    multiplier of 1), so a fragment's summary serves every spread of it."""

    fields: int = 0
    aliases: int = 0
    directives: int = 0
    depth: int = 0
    cost: int = 0
    merges: int = 0
    variable_cost: bool = False  # a `first`/`last` taken from a variable
    shape: dict[str, _Merged] = field(default_factory=dict)

    def absorb(self, other: _Summary) -> None:
        self.fields += other.fields
        self.aliases += other.aliases
        self.directives += other.directives
        self.depth = max(self.depth, other.depth)
        self.cost += other.cost
        self.variable_cost = self.variable_cost or other.variable_cost
        self.merges += other.merges + _merge(self.shape, other.shape)


class LimitChecker:
    """Checks documents against `limits` for one schema (built once per gateway)."""

    def __init__(self, schema: GraphQLSchema, limits: Limits) -> None:
        self.schema = schema
        self.limits = limits
        # Relay connections: a field taking `first`/`last` whose type is not a list. Their list
        # fields (edges, nodes) hold the `first` items already counted on the field itself.
        self.connections: frozenset[str] = frozenset(
            get_named_type(f.type).name
            for t in schema.type_map.values()
            if not t.name.startswith("__")
            for f in (getattr(t, "fields", None) or {}).values()
            if any(a in (getattr(f, "args", None) or ()) for a in SLICING_ARGUMENTS)
            and not is_list_type(get_nullable_type(f.type))
        )

    def check(self, document: DocumentNode) -> bool:
        """Raise LimitExceeded at the first limit any operation of `document` is over.
        Returns True when a cost depends on variables and must be checked per request
        (`check_cost`): the check assumed such a `first` to be at its cap and found it over."""
        walk = _Walk(self, document, None)
        per_request = False
        for op in document.definitions:
            if not isinstance(op, OperationDefinitionNode):
                continue
            walk.operation = op
            total = walk.operation_summary(op)
            if total.cost > self.limits.max_cost:
                per_request = True  # only variable costs get here (fixed ones raised already)
        return per_request

    def check_cost(
        self, document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any]
    ) -> None:
        """The cost of the operation to run, with its variables' `first`/`last` values."""
        ops = [
            d
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
            and (not operation_name or (d.name is not None and d.name.value == operation_name))
        ]
        walk = _Walk(self, document, variables)
        for op in ops[:1]:
            walk.operation = op
            walk.operation_summary(op)


class _Walk:
    def __init__(
        self, checker: LimitChecker, document: DocumentNode, variables: Mapping[str, Any] | None
    ) -> None:
        self.schema = checker.schema
        self.limits = checker.limits
        self.connections = checker.connections
        self.variables = variables  # None: the static check (variable sizes at their cap)
        self.operation: OperationDefinitionNode | None = None
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.memo: dict[str, _Summary] = {}
        self.open: list[str] = []  # fragments being summarised (a cycle guard)
        # Recursion guard: selection sets, inline fragments and spreads nested this deep are
        # refused before Python's own recursion limit is anywhere near.
        self.max_nesting = self.limits.max_depth + 50
        self.nesting = 0

    def operation_summary(self, op: OperationDefinitionNode) -> _Summary:
        directives = len(op.directives or ()) + sum(
            len(v.directives or ()) for v in op.variable_definitions or ()
        )
        if directives > self.limits.max_directives:
            self._over_directives()
        root = self.schema.get_root_type(op.operation)
        total = self.selection_set(root, op.selection_set.selections, 1)
        total.directives += directives
        self._check(total)
        return total

    def selection_set(
        self, parent: Any, selections: Iterable[SelectionNode], level: int
    ) -> _Summary:
        """`level`: the depth of these fields below the operation or fragment walked; a level
        past the limit is refused on the way down, before anything below it is walked."""
        if level > self.limits.max_depth:
            raise LimitExceeded(
                f"The operation is at least {level} levels deep; the limit is "
                f"{self.limits.max_depth}."
            )
        self.nesting += 1
        if self.nesting > self.max_nesting:
            raise LimitExceeded(
                f"The operation nests selections more than {self.max_nesting} deep."
            )
        try:
            out = _Summary()
            for sel in selections:
                out.directives += len(sel.directives or ())
                if isinstance(sel, FieldNode):
                    self._field(out, parent, sel, level)
                elif isinstance(sel, InlineFragmentNode):
                    cond = (
                        self.schema.get_type(sel.type_condition.name.value)
                        if sel.type_condition
                        else parent
                    )
                    out.absorb(self.selection_set(cond, sel.selection_set.selections, level))
                elif isinstance(sel, FragmentSpreadNode):
                    summary = self.fragment(sel.name.value)
                    if summary is not None:
                        out.absorb(summary)
                self._check(out)
            return out
        finally:
            self.nesting -= 1

    def _field(self, out: _Summary, parent: Any, node: FieldNode, level: int) -> None:
        name = node.name.value
        out.fields += 1
        if node.alias is not None:
            out.aliases += 1
        out.depth = max(out.depth, 1)
        key = node.alias.value if node.alias is not None else name
        if name in INTROSPECTION_FIELDS:
            if not self.limits.introspection:
                raise LimitExceeded("GraphQL introspection is not allowed here.")
            # Introspection's own shape is bounded by the schema: the field counts once.
            out.cost += 1
            out.merges += _merge(out.shape, {key: _Merged(1)})
            return
        fields = getattr(parent, "fields", None)
        fdef = fields.get(name) if fields is not None else None
        size = self._size(node, fdef, parent, out)
        child: _Summary | None = None
        if node.selection_set is not None:
            child_type = get_named_type(fdef.type) if fdef is not None else None
            child = self.selection_set(child_type, node.selection_set.selections, level + 1)
            out.fields += child.fields
            out.aliases += child.aliases
            out.directives += child.directives
            out.depth = max(out.depth, 1 + child.depth)
            out.merges += child.merges
            out.variable_cost = out.variable_cost or child.variable_cost
        out.cost += size * (1 + (child.cost if child is not None else 0))
        below = child.shape if child is not None else None
        mine = out.shape.get(key)
        if mine is None:
            out.shape[key] = _Merged(1, below)  # the child's tree is fresh: adopt, not copy
            return
        out.merges += mine.count
        mine.count += 1
        if below:
            if mine.below is None:
                mine.below = {}
            out.merges += _merge(mine.below, below)

    def _size(self, node: FieldNode, fdef: Any, parent: Any, out: _Summary) -> int:
        """How many items the field stands for in the cost."""
        if fdef is None:
            return 1
        if any(a in fdef.args for a in SLICING_ARGUMENTS):
            sizes = [
                self._argument_size(a.value, out)
                for a in node.arguments or ()
                if a.name.value in SLICING_ARGUMENTS
            ]
            size = max(sizes) if sizes else self.limits.page_size_default
            return max(1, min(size, self.limits.page_size_max))
        if is_list_type(get_nullable_type(fdef.type)):
            if getattr(parent, "name", None) in self.connections:
                return 1  # edges/nodes of a connection: its `first` counted them already
            return self.limits.default_list_size
        return 1

    def _argument_size(self, value: Any, out: _Summary) -> int:
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            if self.variables is None:
                out.variable_cost = True
                return self.limits.page_size_max
            given = self.variables.get(value.name.value)
            if isinstance(given, int) and not isinstance(given, bool):
                return given
            if given is None:
                default = self._variable_default(value.name.value)
                if isinstance(default, IntValueNode):
                    return int(default.value)
                return self.limits.page_size_default
        return self.limits.page_size_max  # not a number: the subgraph refuses it; assume the cap

    def _variable_default(self, name: str) -> Any:
        for v in (self.operation.variable_definitions if self.operation else None) or ():
            if v.variable.name.value == name:
                return v.default_value
        return None

    def fragment(self, name: str) -> _Summary | None:
        summary = self.memo.get(name)
        if summary is not None:
            return summary
        frag = self.fragments.get(name)
        if frag is None:
            return None  # validation names the unknown fragment
        if name in self.open:
            # Validation refuses cycles too; the walk must not wait for it.
            raise LimitExceeded(f'Cannot spread fragment "{name}" within itself.')
        self.open.append(name)
        try:
            cond = self.schema.get_type(frag.type_condition.name.value)
            summary = self.selection_set(cond, frag.selection_set.selections, 1)
            summary.directives += len(frag.directives or ())
        finally:
            self.open.pop()
        self.memo[name] = summary
        return summary

    def _over_directives(self) -> None:
        raise LimitExceeded(
            f"The operation uses more than {self.limits.max_directives} directives."
        )

    def _check(self, s: _Summary) -> None:
        # Every count of a part is at most the operation's (a spread adds a fragment's counts,
        # multipliers are at least 1), so a part over a limit means the operation is over it.
        lim = self.limits
        if s.depth > lim.max_depth:
            raise LimitExceeded(
                f"The operation is at least {s.depth} levels deep; the limit is {lim.max_depth}."
            )
        if s.aliases > lim.max_aliases:
            raise LimitExceeded(f"The operation uses more than {lim.max_aliases} aliases.")
        if s.fields > lim.max_fields:
            raise LimitExceeded(f"The operation selects more than {lim.max_fields} fields.")
        if s.directives > lim.max_directives:
            self._over_directives()
        if s.merges > lim.max_field_merges:
            raise LimitExceeded(
                "The operation repeats fields that merge into one response "
                f"key too often (more than {lim.max_field_merges} pairs)."
            )
        if s.cost > lim.max_cost and (self.variables is not None or not s.variable_cost):
            raise LimitExceeded(
                f"The operation's estimated cost is over {lim.max_cost} (at least {s.cost})."
            )


def check_document(schema: GraphQLSchema, document: DocumentNode, limits: Limits) -> bool:
    """Raise LimitExceeded if any operation of `document` is over a limit (see LimitChecker)."""
    return LimitChecker(schema, limits).check(document)


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
                raise ValueError(
                    f"trusted documents file: hash {h[:12]}... does not match its document"
                )
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
    """Token bucket per key (user id, or client address for anonymous requests).

    With `replicas` gateways behind one balancer each holds 1/replicas of the rate and the
    burst, so the sum over the replicas never exceeds the configured limit (the balancer spreads
    a client's requests, so an honest client still gets about the whole of it). The count is
    live: `replicas` may be set at any time (gateway/replica_count.py follows the autoscaler),
    and a bucket fuller than the new share is cut down to it at its next use."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000, replicas: int = 1) -> None:
        self.total_rate = rate
        self.total_burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.replicas = replicas

    @property
    def replicas(self) -> int:
        return self._replicas

    @replicas.setter
    def replicas(self, count: int) -> None:
        self._replicas = share = max(1, count)
        self.rate = self.total_rate / share
        self.burst = max(1.0, self.total_burst / share) if self.total_burst > 0 else 0.0

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
