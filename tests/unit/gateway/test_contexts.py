"""@context / @fromContext without Node: composition output and refusals, the plan (the context
value fetched first, the field's entity fetch after it), and the executor sending one aliased
`_entities` per distinct context value. The side-by-side with Apollo is
tests/compat/test_context_supergraphs.py."""

from __future__ import annotations

import pytest

from gateway.composition import CompositionError, compose
from gateway.executor import _context_value, collect_targets_in_context
from gateway.planning.builder import ContextSource, OutSel
from gateway.supergraph import Supergraph
from tests.unit.gateway.test_executor import run

pytestmark = pytest.mark.unit

LINK = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.8", import: '
    '["@key", "@shareable", "@external", "@context", "@fromContext"])\n'
)
USERS = LINK + """
type Query { users: [User!]! }
type User @key(fields: "id") @context(name: "userContext") {
  id: ID! name: String! userCurrency: Currency! @external transactions: [Transaction!]!
}
type Currency @shareable { id: ID! isoCode: String! }
type Transaction @key(fields: "id") {
  id: ID!
  amountInUserCurrency(
    currencyCode: String @fromContext(field: "$userContext { userCurrency { isoCode } }")
    round: Boolean
  ): Int!
}
"""
ACCOUNTS = LINK + """
type User @key(fields: "id") { id: ID! userCurrency: Currency! }
type Currency @shareable { id: ID! isoCode: String! }
"""


@pytest.fixture(scope="module")
def supergraph() -> Supergraph:
    return Supergraph.from_sdl(compose({
        "users": ("http://users.test/graphql", USERS),
        "accounts": ("http://accounts.test/graphql", ACCOUNTS),
    }))


def test_composition_writes_contexts_as_apollo_does(supergraph):
    sdl = supergraph.sdl
    assert '@link(url: "https://specs.apollo.dev/context/v0.1", for: SECURITY)' in sdl
    assert '@link(url: "https://specs.apollo.dev/join/v0.5", for: EXECUTION)' in sdl
    assert '@context(name: "users__userContext")' in sdl
    fm = supergraph.types["Transaction"].fields["amountInUserCurrency"]
    (carg,) = fm.context_args["users"]
    assert (carg.name, carg.type, carg.context, carg.selection) == (
        "currencyCode", "String", "users__userContext", "{ userCurrency { isoCode } }")
    # The contextual argument is the gateway's to fill: clients never see it.
    api_field = supergraph.api_schema.get_type("Transaction").fields["amountInUserCurrency"]
    assert list(api_field.args) == ["round"]
    assert supergraph.types["User"].contexts == {"users__userContext"}


@pytest.mark.parametrize(("sdl", "words"), [
    ('type Query { t: T } type T @key(fields: "id") @context(name: "a_b") { id: ID! }',
     ["CONTEXT_NAME_INVALID", '"a_b"', '"T"']),
    ('type Query { t: T } type T @key(fields: "id") { id: ID! '
     'f(x: String @fromContext(field: "$nowhere { id }")): Int }',
     ["CONTEXT_NOT_SET", '"T.f(x:)"', '"nowhere"']),
    ('type Query { t: T } type T @key(fields: "id") @context(name: "c") { id: ID! u: U } '
     'type U @key(fields: "id") { id: ID! f(x: ID! @fromContext(field: "$c { id }")): Int }',
     ["CONTEXT_INVALID_SELECTION", '"U.f(x:)"', '"ID!"']),
    ('type Query { t: T u: U } type T @key(fields: "id") @context(name: "c") { id: ID! u: U } '
     'type U @key(fields: "id") { id: ID! f(x: ID @fromContext(field: "$c { id }")): Int }',
     ['"U.f(x:)"', '"Query.u"', '"c"']),
])
def test_composition_refuses_what_apollo_refuses(sdl, words):
    with pytest.raises(CompositionError) as exc:
        compose({"s": ("http://s.test", LINK + sdl)})
    text = "\n".join(exc.value.errors)
    for w in [*words, '"s"']:
        assert w in text, (w, text)


def _users(body):
    return {"data": {"users": [
        {"__typename": "User", "id": "u1", "transactions": [
            {"__typename": "Transaction", "id": "t1"}, {"__typename": "Transaction", "id": "t2"}]},
        {"__typename": "User", "id": "u2", "transactions": [
            {"__typename": "Transaction", "id": "t1"}]},
        {"__typename": "User", "id": "u3", "transactions": [
            {"__typename": "Transaction", "id": "t2"}]},
    ]}}


def _accounts(body):
    cur = {"u1": "EUR", "u2": "GBP", "u3": "EUR"}
    reps = body["variables"]["r0"]
    return {"data": {"_0": [{"_ctx_userCurrency": {"isoCode": cur[r["id"]]}} for r in reps]}}


def _users_entities(body):
    out = {}
    for alias, value in body["variables"].items():
        if not alias.startswith("r"):
            continue
        n = alias[1:]
        code = next(v for k, v in body["variables"].items()
                    if k.startswith("__ctx") and k.endswith(f"_{n}"))
        # EUR t1 -> 11, GBP t1 -> 21: the value says which currency the subgraph was given.
        rate = {"EUR": 10, "GBP": 20}[code]
        out[f"_{n}"] = [{"amountInUserCurrency": rate + int(r["id"][1:])} for r in value]
    return {"data": out}


def test_plan_fetches_the_context_first_and_groups_by_value(supergraph):
    calls_users = []

    def users(body):
        calls_users.append(body)
        return _users(body) if "_entities" not in body["query"] else _users_entities(body)

    result, calls = run(supergraph, "{ users { id transactions { id amountInUserCurrency } } }",
                        {"users": users, "accounts": _accounts})
    assert [c[0] for c in calls] == ["users", "accounts", "users"]
    last = calls_users[-1]
    # Two distinct currencies: two aliased _entities, each with its own representations.
    assert last["query"].count("_entities(") == 2
    assert sorted(v for k, v in last["variables"].items() if k.startswith("__ctx")) == [
        "EUR", "GBP"]
    assert result == {"data": {"users": [
        {"id": "u1", "transactions": [{"id": "t1", "amountInUserCurrency": 11},
                                      {"id": "t2", "amountInUserCurrency": 12}]},
        {"id": "u2", "transactions": [{"id": "t1", "amountInUserCurrency": 21}]},
        {"id": "u3", "transactions": [{"id": "t2", "amountInUserCurrency": 12}]},
    ]}}, result


def test_context_value_is_the_nearest_enclosing_setter():
    sel = OutSel()
    sel.add_field("name", "name")
    data = {"root": {"__typename": "Folder", "name": "outer", "sub": [
        {"__typename": "Folder", "name": "inner", "files": [{"id": "x"}]}]}}
    sources = [ContextSource(1, frozenset({"Folder"}), sel),
               ContextSource(2, frozenset({"Folder"}), sel)]
    ((_, at, chain),) = collect_targets_in_context(data, ("root", "sub", "files"))
    assert at == ("root", "sub", 0, "files", 0)
    assert _context_value(chain, sources) == "inner"
    assert _context_value(chain, sources[:1]) == "outer"
    # No enclosing object of the context's types: the argument is sent as null.
    assert _context_value(chain, [ContextSource(2, frozenset({"Other"}), sel)]) is None


ACCESS_LINK = LINK.replace('"@fromContext"]', '"@fromContext", "@requiresScopes", '
                           '"@authenticated", "@requires"]')


@pytest.mark.parametrize(("protect", "accepted"), [
    ("", False),  # the contextual field would leak the protected value to anyone
    (' @requiresScopes(scopes: [["hr"]])', True),
    (' @requiresScopes(scopes: [["hr", "admin"]])', True),  # stricter is fine
    (' @requiresScopes(scopes: [["admin"]])', False),  # another scope is not enough
])
def test_contextual_field_must_protect_what_it_reads(protect, accepted):
    sdl = ACCESS_LINK + (
        'type Query { t: T } type T @key(fields: "id") @context(name: "c") '
        '{ id: ID! salary: Int @requiresScopes(scopes: [["hr"]]) u: U } '
        'type U @key(fields: "id") { id: ID! '
        f'band(s: Int @fromContext(field: "$c {{ salary }}")): String{protect} }}')
    if accepted:
        compose({"s": ("http://s.test", sdl)})
        return
    with pytest.raises(CompositionError) as exc:
        compose({"s": ("http://s.test", sdl)})
    assert "MISSING_TRANSITIVE_AUTH_REQUIREMENTS" in "\n".join(exc.value.errors)


@pytest.mark.parametrize(("protect", "accepted"), [("", False), (" @authenticated", True)])
def test_requires_field_must_protect_what_it_reads(protect, accepted):
    subgraphs = {
        "a": ("http://a.test", ACCESS_LINK + 'type Query { t: T } type T @key(fields: "id") '
              "{ id: ID! salary: Int @authenticated }"),
        "b": ("http://b.test", ACCESS_LINK + 'type T @key(fields: "id") { id: ID! '
              f'salary: Int @external band: String @requires(fields: "salary"){protect} }}'),
    }
    if accepted:
        compose(subgraphs)
        return
    with pytest.raises(CompositionError) as exc:
        compose(subgraphs)
    assert '"T.band"' in "\n".join(exc.value.errors)
