"""`@authenticated` / `@requiresScopes` / `@policy` supergraphs (tests/compat/access_cases.py):
Apollo's composition composes them and ours composes the same access metadata; @apollo/gateway
refuses to serve them (Router-only features: asserted); our gateway answers each operation as
each principal the way Apollo Router's "filter" mode does."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from doorward_kit.auth import Principal, Role
from gateway.supergraph import Supergraph
from tests.compat.access_cases import ACCESS_CASES, ACCESS_OPS
from tests.compat.datagraph import serve_cases
from tests.compat.test_apollo_gateway import COMPARE_SETTINGS
from tests.compat.test_context_supergraphs import _node
from tests.integration.gateway.conftest import RunningGateway, gateway_settings, start_gateway

pytestmark = pytest.mark.compat

CASES = [c for c, _ in ACCESS_CASES]
REFUSED = "is for: SECURITY but is unsupported"


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with serve_cases(CASES, "access-datagraphs") as base:
        yield base


@pytest.fixture(scope="module")
def supergraphs(served) -> dict[str, str]:
    out = _node("compose.mjs", {
        c.name: {n: {"url": f"{served}/{c.name}/{n}", "sdl": sdl} for n, sdl in c.subgraphs.items()}
        for c in CASES})
    failed = {k: v["errors"] for k, v in out.items() if "errors" in v}
    assert not failed, failed
    return {k: v["supergraphSdl"] for k, v in out.items()}


async def _authenticate(header: str | None) -> Principal:
    """Test principals: `Bearer ROLE,ROLE` (the signature checks are the kit's, tested there)."""
    assert header is not None and header.startswith("Bearer ")
    roles = frozenset(Role(r) for r in header[len("Bearer "):].split(","))
    return Principal("u1", "o1", roles, frozenset(), "s1", 0)


@pytest.fixture(scope="module")
def ours(supergraphs) -> Iterator[dict[str, RunningGateway]]:
    running: dict[str, RunningGateway] = {}
    try:
        for name, sdl in supergraphs.items():
            running[name] = start_gateway(
                gateway_settings({}, **COMPARE_SETTINGS, subgraph_timeout=10.0,
                                 auth_enabled=True),
                authenticator=_authenticate, supergraph_sdl=sdl)
        yield running
    finally:
        for gw in running.values():
            gw.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_apollo_gateway_refuses_access_supergraphs(supergraphs, case):
    out = _node("apollo_context.mjs", {case.name: {"sdl": supergraphs[case.name], "ops": {}}})
    assert REFUSED in (out[case.name]["gateway"] or ""), out


@pytest.mark.parametrize(("case", "name", "query", "roles", "data", "paths"), ACCESS_OPS,
                         ids=[o[1] for o in ACCESS_OPS])
def test_router_filter_answer(ours, case, name, query, roles, data, paths):
    got = httpx.post(ours[case].url, json={"query": query}, timeout=15,
                     headers={"authorization": "Bearer " + ",".join(roles)}).json()
    assert got.get("data") == data, got
    errors = got.get("errors") or []
    assert sorted(e.get("path") for e in errors) == sorted(paths), got
    assert {e["extensions"]["code"] for e in errors} <= {"UNAUTHORIZED_FIELD_OR_TYPE"}, got


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_our_composition_matches_apollos(supergraphs, served, case):
    from graphql import lexicographic_sort_schema, print_schema

    from gateway.composition import compose

    theirs = Supergraph.from_sdl(supergraphs[case.name])
    mine = Supergraph.from_sdl(
        compose({n: (f"{served}/{case.name}/{n}", sdl) for n, sdl in case.subgraphs.items()}))
    assert print_schema(lexicographic_sort_schema(mine.api_schema)) == print_schema(
        lexicographic_sort_schema(theirs.api_schema))
    for tname, tm in theirs.types.items():
        got = mine.types[tname]
        assert (got.graphs, got.keys, got.access) == (tm.graphs, tm.keys, tm.access), tname
        for fname, fm in tm.fields.items():
            mf = mine.types[tname].fields[fname]
            assert (mf, mf.access) == (fm, fm.access), f"{tname}.{fname}"
