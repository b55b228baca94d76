"""The gateway against @apollo/gateway over the same running subgraphs: identical `data`,
the same error paths and codes, for every operation of the corpus."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from doorward_kit.net import free_port
from gateway.composition import Supergraph
from tests.compat.corpus import CORPUS, OPERATION_NAMES
from tests.integration.gateway.conftest import RunningGateway, gateway_settings, start_gateway
from tests.integration.gateway.harness import RunningSubgraphs, start_subgraphs

pytestmark = pytest.mark.compat

ROOT = Path(__file__).resolve().parents[2]
# @apollo/gateway has no rate or cost limit: ours are off here, so the comparison compares
# federation (deep_chain's four nested lists estimate over the default cost limit of 10,000).
COMPARE_SETTINGS = {"rate_limit_per_second": 0, "max_cost": 10_000_000}
CACHE = ROOT / ".cache" / "node-gateway"
HERE = Path(__file__).resolve().parent


def ensure_node_modules() -> Path:
    """Install @apollo/gateway and @apollo/composition into .cache/node-gateway (once)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js is missing: install node and npm to compare with @apollo/gateway")
    CACHE.mkdir(parents=True, exist_ok=True)
    # Two pytest-xdist workers may both get here first on a clean clone: one installs, the
    # other waits for it (two `npm ci` in one folder break each other).
    with (CACHE / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        changed = False
        for name in ("package.json", "package-lock.json", "apollo_gateway.mjs"):
            src, dst = HERE / name, CACHE / name
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copyfile(src, dst)
                changed = changed or name != "apollo_gateway.mjs"
        if changed or not (CACHE / "node_modules" / "@apollo" / "gateway").exists():
            # The committed lock file pins every package: the same versions on every machine.
            proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                                  cwd=CACHE, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                pytest.fail(f"npm ci failed: {proc.stderr[-2000:]}")
    return CACHE / "apollo_gateway.mjs"


class NodeGateway:
    def __init__(self, script: Path, urls: dict[str, str], **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        full_env = {**os.environ, "SUBGRAPHS": __import__("json").dumps(urls),
                    "PORT": str(self.port), **env}
        self.proc = subprocess.Popen(["node", str(script)], cwd=script.parent, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"@apollo/gateway exited: {self.proc.stderr.read()[-2000:]}")
            try:
                httpx.get(self.url, params={"query": "{__typename}"},
                          headers={"apollo-require-preflight": "1"}, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("@apollo/gateway did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def script() -> Path:
    return ensure_node_modules()


@pytest.fixture(scope="module")
def subgraphs() -> Iterator[RunningSubgraphs]:
    running = start_subgraphs()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def apollo_sdl_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("supergraph") / "apollo.graphql"


@pytest.fixture(scope="module")
def apollo(script, subgraphs, apollo_sdl_path) -> Iterator[NodeGateway]:
    gw = NodeGateway(script, subgraphs.urls, SUPERGRAPH_OUT=str(apollo_sdl_path))
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def ours(subgraphs) -> Iterator[RunningGateway]:
    gw = start_gateway(gateway_settings(subgraphs.urls, **COMPARE_SETTINGS))
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def ours_on_apollo_supergraph(apollo, apollo_sdl_path, subgraphs) -> Iterator[RunningGateway]:
    sdl = apollo_sdl_path.read_text()
    gw = start_gateway(gateway_settings({}, **COMPARE_SETTINGS), supergraph_sdl=sdl)
    try:
        yield gw
    finally:
        gw.stop()


def run(url: str, name: str, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    if name in OPERATION_NAMES:
        body["operationName"] = OPERATION_NAMES[name]
    resp = httpx.post(url, json=body, timeout=15,
                      headers={"apollo-require-preflight": "1", "authorization": "Bearer t"})
    return resp.json()


def summary(result: dict[str, Any]) -> tuple[Any, list[tuple[Any, Any]]]:
    errors = sorted(((tuple(e["path"]) if e.get("path") else None,
                      (e.get("extensions") or {}).get("code"))
                     for e in result.get("errors") or ()), key=repr)
    return result.get("data"), errors


@pytest.mark.parametrize(("name", "query", "variables"), CORPUS, ids=[c[0] for c in CORPUS])
def test_same_result_as_apollo_gateway(apollo, ours, name, query, variables):
    expected = run(apollo.url, name, query, variables)
    actual = run(ours.url, name, query, variables)
    assert summary(actual) == summary(expected), (expected, actual)
    if not name.startswith(("validation", "parse", "missing", "wrong", "operation_name_")) and \
            name not in ("null_bubble_to_root", "null_bubble_list", "mutation_error"):
        assert expected.get("data") is not None, expected  # the comparison compares something


@pytest.mark.parametrize(("name", "query", "variables"), CORPUS[:40],
                         ids=[c[0] for c in CORPUS[:40]])
def test_apollo_composed_supergraph_serves_the_same(apollo, ours_on_apollo_supergraph, name,
                                                    query, variables):
    expected = run(apollo.url, name, query, variables)
    actual = run(ours_on_apollo_supergraph.url, name, query, variables)
    assert summary(actual) == summary(expected), (expected, actual)


def test_apollo_gateway_accepts_our_supergraph(script, subgraphs, tmp_path):
    from gateway.composition import compose

    path = tmp_path / "ours.graphql"
    path.write_text(compose(subgraphs.sdls()))
    Supergraph.from_sdl(path.read_text())
    gw = NodeGateway(script, {}, SUPERGRAPH_IN=str(path))
    try:
        for name, query, variables in CORPUS[:20]:
            result = run(gw.url, name, query, variables)
            assert "data" in result, (name, result)
    finally:
        gw.stop()


def test_same_api_schema_and_join_metadata_as_apollo_composition(apollo, apollo_sdl_path,
                                                                 subgraphs):
    from graphql import lexicographic_sort_schema, print_schema

    from gateway.composition import compose

    theirs = Supergraph.from_sdl(apollo_sdl_path.read_text())
    ours = Supergraph.from_sdl(compose(subgraphs.sdls()))

    def api(sg: Supergraph) -> str:
        return print_schema(lexicographic_sort_schema(sg.api_schema))

    assert api(ours) == api(theirs)
    assert ours.urls == theirs.urls
    for name, tm in theirs.types.items():
        mine = ours.types[name]
        assert (mine.kind, mine.graphs, mine.keys, mine.possible) == \
            (tm.kind, tm.graphs, tm.keys, tm.possible), name
        for fname, fm in tm.fields.items():
            assert mine.fields[fname] == fm, f"{name}.{fname}"
