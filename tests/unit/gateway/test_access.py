"""@authenticated, @requiresScopes and @policy enforced against the Doorward principal:
the refused field is never asked of a subgraph and answers null with an error; the caller
who holds the grant gets the data (supergraph composed by Apollo: supergraphs/access.graphql)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from doorward_kit.auth import Principal, Role
from gateway.executor import Executor
from gateway.planner import QueryPlanner
from gateway.supergraph import Supergraph
from tests.unit.gateway.test_executor import FakeSubgraphs

pytestmark = pytest.mark.unit

SG = Supergraph.from_sdl((Path(__file__).parent / "supergraphs" / "access.graphql").read_text())


def principal(*roles: Role) -> Principal:
    return Principal(
        user_id="u1",
        org_id="o1",
        roles=frozenset(roles),
        region_ids=frozenset(),
        session_id="s",
        epoch=1,
    )


def run(query: str, answers: dict, who: object | None):
    fake = FakeSubgraphs(answers)
    qp = QueryPlanner(SG)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            ex = Executor(SG.urls, SG.api_schema, client)
            plan = qp.plan_for(qp.get(query, None), who)
            return await ex.execute(plan, {}, {})

    return asyncio.run(go()), fake.calls


ME = {
    "a": lambda body: {
        "data": {
            "me": {
                k: v
                for k, v in {
                    "name": "Ann",
                    "email": "ann@example.test",
                    "salary": 10,
                    "__typename": "User",
                    "id": "1",
                }.items()
                if k in body["query"]
            }
        }
    }
}


def test_authenticated_field_refused_to_anonymous_and_never_fetched():
    result, calls = run("{ me { name email } }", ME, None)
    assert result["data"] == {"me": {"name": "Ann", "email": None}}
    assert result["errors"] == [
        {
            "message": "Unauthorized field or type",
            "path": ["me", "email"],
            "extensions": {"code": "UNAUTHORIZED_FIELD_OR_TYPE"},
        }
    ]
    assert "email" not in calls[0][1]["query"]


def test_authenticated_field_served_to_a_verified_principal():
    result, calls = run("{ me { name email } }", ME, principal(Role.TECHNICIAN))
    assert result == {"data": {"me": {"name": "Ann", "email": "ann@example.test"}}}
    assert "email" in calls[0][1]["query"]


def test_required_scope_is_a_role_and_a_non_null_refusal_nulls_the_parent():
    result, calls = run("{ me { name salary } }", ME, principal(Role.TECHNICIAN))
    assert result["data"] == {"me": None}
    assert [e["path"] for e in result["errors"]] == [["me", "salary"]]
    assert "salary" not in calls[0][1]["query"]
    for role in (Role.ADMIN, Role.AUDITOR):  # either alternative of [["ADMIN"], ["AUDITOR"]]
        result, _ = run("{ me { name salary } }", ME, principal(role))
        assert result == {"data": {"me": {"name": "Ann", "salary": 10}}}


def test_policy_granted_by_role_only_and_refused_entity_jump_is_not_made():
    answers = {**ME, "b": {"data": {"_0": [{"__typename": "User", "code": "1234"}]}}}
    result, calls = run("{ me { name code } }", answers, principal(Role.DISPATCHER))
    assert result["data"] == {"me": {"name": "Ann", "code": None}}
    assert [c[0] for c in calls] == ["a"]  # no _entities call for a refused field
    result, calls = run("{ me { name code } }", answers, principal(Role.ADMIN))
    assert result == {"data": {"me": {"name": "Ann", "code": "1234"}}}
    assert [c[0] for c in calls] == ["a", "b"]


def test_authenticated_type_refused_through_any_field_returning_it():
    answers = {"a": {"data": {"doors": [{"id": "d1", "label": "front"}]}}}
    result, calls = run("{ doors { label } }", answers, None)
    assert result["data"] is None  # [Door!]! on Query: the null reaches the root
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHORIZED_FIELD_OR_TYPE"
    assert calls == []
    result, _ = run("{ doors { label } }", answers, principal(Role.TECHNICIAN))
    assert result == {"data": {"doors": [{"label": "front"}]}}


def test_plans_per_grant_are_cached_and_the_unrestricted_plan_is_shared():
    qp = QueryPlanner(SG)
    cached = qp.get("{ me { name email } }", None)
    anon = qp.plan_for(cached, None)
    assert qp.plan_for(cached, None) is anon
    assert qp.plan_for(cached, principal(Role.ADMIN)) is cached.plan


def test_our_composition_carries_the_same_access_directives_as_apollos():
    import json

    from gateway.composition import compose

    subgraphs = json.loads(
        (Path(__file__).parent / "supergraphs" / "access_subgraphs.json").read_text()
    )
    ours = Supergraph.from_sdl(compose({k: (v["url"], v["sdl"]) for k, v in subgraphs.items()}))
    for tname, tm in SG.types.items():
        assert ours.types[tname].access == tm.access, tname
        for fname, fm in tm.fields.items():
            assert ours.types[tname].fields[fname].access == fm.access, f"{tname}.{fname}"
