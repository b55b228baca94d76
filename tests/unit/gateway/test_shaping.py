"""The shaper's fast paths (a leaf, an object, a list of objects or of leaves, each completed
without unwrapping its type again) answer exactly what the general path answers: the same data,
the same errors with the same paths, the same nulls bubbling to the same parent. Hypothesis
writes subgraph answers of every shape, including the wrong ones (nulls where the schema says
non-null, strings for objects, lists for leaves, enum values the schema does not have)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from graphql import FragmentDefinitionNode, OperationDefinitionNode, build_schema, parse
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import executor

pytestmark = pytest.mark.unit

SCHEMA = build_schema("""
scalar DateTime
enum Kind { DOOR ALARM }
interface Named { name: String }
type Tag implements Named { name: String, kind: Kind! }
type Event { action: String!, kind: Kind, at: DateTime, when: DateTime!, tags: [Tag!] }
type Site { address: String, kinds: [Kind!]!, labels: [String], event: Event }
type Order {
  id: ID!
  title: String
  count: Int
  done: Boolean!
  site: Site
  mainSite: Site!
  events: [Event!]!
  maybeEvents: [Event]
  strictList: [Event!]
  looseList: [Event]!
  kinds: [Kind!]!
  labels: [String]
  named: Named
}
type Query { orders: [Order!]!, order: Order, strict: Order! }
""")

QUERY = parse("""
query {
  orders {
    id title count done
    site { address kinds labels event { action kind at tags { name kind } } }
    mainSite { address kinds }
    events { action kind at when tags { kind } }
    maybeEvents { action kind }
    strictList { action }
    looseList { kind }
    kinds labels
    named { name ... on Tag { kind } }
    ... F
  }
  order { id events { action } site { kinds } }
  strict { id mainSite { kinds } }
}
fragment F on Order { title site { address } }
""")


@dataclass
class _Plan:
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    extra: dict[str, Any] = field(default_factory=dict)


def _plan() -> _Plan:
    op = next(d for d in QUERY.definitions if isinstance(d, OperationDefinitionNode))
    frags = {d.name.value: d for d in QUERY.definitions if isinstance(d, FragmentDefinitionNode)}
    return _Plan(op, frags)


def _general_only(key, node, subs, fname, ftype):  # type: ignore[no-untyped-def]
    plan = _REAL_FIELD_PLAN(key, node, subs, fname, ftype)
    return plan._replace(kind=executor._OTHER)


_REAL_FIELD_PLAN = executor._field_plan

# Anything a subgraph might send for any field: right and wrong.
_leafish = st.one_of(
    st.none(),
    st.sampled_from(["DOOR", "ALARM", "WINDOW", "x"]),
    st.integers(-(2**32), 2**32),
    st.booleans(),
    st.floats(allow_nan=False),
)


def _value(depth: int) -> st.SearchStrategy[Any]:
    if depth <= 0:
        return _leafish
    inner = _value(depth - 1)
    obj = st.fixed_dictionaries(
        {},
        optional={
            k: inner
            for k in (
                "id",
                "title",
                "count",
                "done",
                "site",
                "mainSite",
                "events",
                "maybeEvents",
                "strictList",
                "looseList",
                "kinds",
                "labels",
                "named",
                "address",
                "event",
                "action",
                "kind",
                "at",
                "when",
                "tags",
                "name",
                "__typename",
            )
        },
    )
    return st.one_of(_leafish, obj, st.lists(st.one_of(obj, _leafish), max_size=3))


def _shaped(data: dict[str, Any], general: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        if general:
            m.setattr(executor, "_field_plan", _general_only)
        return executor.shape(SCHEMA, _plan(), data, {})  # type: ignore[arg-type]


def _good_order(n: int) -> dict[str, Any]:
    event = {
        "action": "read",
        "kind": "DOOR",
        "at": "2026-11-30T10:00:00+00:00",
        "when": "x",
        "tags": [{"name": "t", "kind": "ALARM"}],
    }
    return {
        "id": f"o{n}",
        "title": "Job",
        "count": n,
        "done": False,
        "site": {"address": "1 High St", "kinds": ["DOOR"], "labels": ["a", None], "event": event},
        "mainSite": {"address": None, "kinds": []},
        "events": [event, event],
        "maybeEvents": [None, event],
        "strictList": None,
        "looseList": [],
        "kinds": ["DOOR", "ALARM"],
        "labels": None,
        "named": {"__typename": "Tag", "name": "n", "kind": "DOOR"},
    }


def test_a_well_formed_answer_is_the_same_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"orders": [_good_order(n) for n in range(3)], "order": None, "strict": _good_order(9)}
    fast = _shaped(data, False, monkeypatch)
    assert fast == _shaped(data, True, monkeypatch)
    shaped, completion, refused = fast
    assert completion == [] and refused == []
    assert shaped["orders"][1]["events"][0]["tags"] == [{"kind": "ALARM"}]
    assert shaped["orders"][0]["site"]["labels"] == ["a", None]


def test_a_bad_item_in_a_non_null_list_bubbles_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = _good_order(1)
    order["events"] = [order["events"][0], {"action": None}]  # non-null field of a non-null item
    order["site"]["kinds"] = ["DOOR", "WINDOW"]  # not a value of the enum
    data = {"orders": [order], "order": {"id": "o2", "events": [None]}, "strict": _good_order(2)}
    fast = _shaped(data, False, monkeypatch)
    assert fast == _shaped(data, True, monkeypatch)
    shaped, completion, _ = fast
    # `events: [Event!]!` cannot be null: the order itself (an item of `[Order!]!`) and so
    # `orders` (non-null, on Query) make all of data null.
    assert shaped is None
    paths = [e["path"] for e in completion]
    assert ["orders", 0, "events", 1, "action"] in paths
    assert ["orders", 0, "site", "kinds", 1] in paths


@settings(max_examples=300, deadline=None)
@given(orders=st.lists(_value(3), max_size=3), order=_value(3), strict=_value(3))
def test_any_answer_is_shaped_the_same_on_both_paths(
    orders: Any,
    order: Any,
    strict: Any,
) -> None:
    data = {"orders": orders, "order": order, "strict": strict}
    with pytest.MonkeyPatch.context() as mp:
        assert _shaped(data, False, mp) == _shaped(data, True, mp)


def _reference_targets(value: Any, path: tuple[str, ...], i: int = 0, at: tuple = ()) -> list:
    """The recursive walk collect_targets replaced (one call per step), as the reference."""
    if isinstance(value, list):
        return [t for n, v in enumerate(value) for t in _reference_targets(v, path, i, (*at, n))]
    if not isinstance(value, dict):
        return []
    if i == len(path):
        return [(value, at)]
    if path[i] not in value:
        return []
    return _reference_targets(value[path[i]], path, i + 1, (*at, path[i]))


_tree = st.recursive(
    st.one_of(st.none(), st.integers(), st.just({})),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=_tree, path=st.lists(st.sampled_from(["a", "b", "c"]), max_size=3).map(tuple))
def test_collect_targets_finds_what_the_recursive_walk_found(data: Any, path: tuple) -> None:
    found = executor.collect_targets(data, path)
    expected = _reference_targets(data, path)
    assert [at for _, at in found] == [at for _, at in expected]
    assert all(a is b for (a, _), (b, _) in zip(found, expected, strict=True))


def test_flat_representations_are_built_like_project_builds_them() -> None:
    from gateway.planning.builder import OutField, OutSel

    rep = OutSel(
        {
            "__typename": OutField("__typename", None, "", ""),
            "id": OutField("id", None, "", ""),
            "sku": OutField("sku", None, "", "", source="code"),
        }
    )
    keys = OutSel({"id": OutField("id", None, "", "")})
    shape = executor._rep_shape(rep, keys)
    assert shape is not executor._NESTED
    pairs, key_names = shape
    obj = {"__typename": "P", "id": "1", "code": None, "other": 2}
    assert {k: obj[s] for k, s in pairs} == executor.project(obj, rep)
    assert key_names == ("id",)
    nested = OutSel(
        {"id": OutField("id", None, "", ""), "org": OutField("org", None, "", "", sub=keys)}
    )
    assert executor._rep_shape(nested, keys) is executor._NESTED
    assert executor._rep_shape(rep, nested) is executor._NESTED
