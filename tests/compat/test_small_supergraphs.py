"""Small supergraphs from the spec's examples, each served by @apollo/gateway and by this
gateway over the same data-driven subgraphs (tests/compat/datagraph.py), composed by Apollo's
composition: identical `data` and error paths for every operation of tests/compat/cases.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.supergraph import Supergraph
from tests.compat.cases import CASES, NULL_DATA, SPEC_DIVERGENCES
from tests.compat.datagraph import serve_cases
from tests.compat.test_apollo_gateway import COMPARE_SETTINGS, ensure_node_modules, summary
from tests.integration.gateway.conftest import RunningGateway, gateway_settings, start_gateway

pytestmark = pytest.mark.compat

OPS = [
    (c.name, op[0], op[1], op[2] if len(op) > 2 else None)  # type: ignore[misc]
    for c in CASES
    for op in c.operations
]


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with serve_cases(CASES, "datagraphs") as base:
        yield base


@pytest.fixture(scope="module")
def supergraphs(served) -> dict[str, str]:
    script = ensure_node_modules().parent / "compose.mjs"
    here = os.path.dirname(__file__)
    for name in ("compose.mjs", "apollo_multi.mjs"):
        with open(os.path.join(here, name), "rb") as src:
            (script.parent / name).write_bytes(src.read())
    request = {
        c.name: {n: {"url": f"{served}/{c.name}/{n}", "sdl": sdl} for n, sdl in c.subgraphs.items()}
        for c in CASES
    }
    proc = subprocess.run(
        ["node", str(script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=script.parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    failed = {k: v["errors"] for k, v in out.items() if "errors" in v}
    assert not failed, failed
    return {k: v["supergraphSdl"] for k, v in out.items()}


@pytest.fixture(scope="module")
def apollo(supergraphs) -> Iterator[dict[str, str]]:
    script = ensure_node_modules().parent / "apollo_multi.mjs"
    proc = subprocess.Popen(
        ["node", str(script)],
        cwd=script.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(supergraphs))
        proc.stdin.close()
        line = proc.stdout.readline()
        assert line.startswith("READY "), (line, proc.stderr.read() if proc.stderr else "")
        yield json.loads(line[len("READY ") :])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def ours(supergraphs) -> Iterator[dict[str, RunningGateway]]:
    from concurrent.futures import ThreadPoolExecutor

    running: dict[str, RunningGateway] = {}

    def start(item: tuple[str, str]) -> None:
        name, sdl = item
        running[name] = start_gateway(
            gateway_settings({}, **COMPARE_SETTINGS), supergraph_sdl=sdl
        )

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(start, supergraphs.items()))
        yield running
    finally:
        for gw in running.values():
            gw.stop()


_CLIENT = httpx.Client(timeout=15, headers={"apollo-require-preflight": "1"})


def _run(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return _CLIENT.post(url, json=body).json()


@pytest.mark.parametrize(("case", "name", "query", "variables"), OPS, ids=[o[1] for o in OPS])
def test_same_result_as_apollo_gateway(apollo, ours, case, name, query, variables):
    expected = _run(apollo[case], query, variables)
    actual = _run(ours[case].url, query, variables)
    if name in SPEC_DIVERGENCES:
        why, spec_data, spec_error_paths = SPEC_DIVERGENCES[name]
        data, errors = summary(actual)
        assert (data, [p for p, _ in errors]) == (spec_data, spec_error_paths), (why, actual)
        assert summary(expected) != summary(actual), f"@apollo/gateway follows the spec: {why}"
        return
    assert summary(actual) == summary(expected), (expected, actual)
    assert expected.get("data") is not None or name in NULL_DATA, expected
    if os.environ.get("COMPAT_SHOW"):
        print("\nSHOW", name, json.dumps(actual)[:300])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_our_composition_matches_apollos(supergraphs, served, case):
    from graphql import lexicographic_sort_schema, print_schema

    from gateway.composition import compose

    theirs = Supergraph.from_sdl(supergraphs[case.name])
    ours = Supergraph.from_sdl(
        compose({n: (f"{served}/{case.name}/{n}", sdl) for n, sdl in case.subgraphs.items()})
    )
    assert print_schema(lexicographic_sort_schema(ours.api_schema)) == print_schema(
        lexicographic_sort_schema(theirs.api_schema)
    )
    for name, tm in theirs.types.items():
        mine = ours.types[name]
        assert (
            mine.kind,
            mine.graphs,
            mine.keys,
            mine.possible,
            mine.interface_objects,
            mine.access,
        ) == (tm.kind, tm.graphs, tm.keys, tm.possible, tm.interface_objects, tm.access), name
        for fname, fm in tm.fields.items():
            got = mine.fields[fname]
            assert (got, got.override_labels, got.access) == (fm, fm.override_labels, fm.access), (
                f"{name}.{fname}"
            )
