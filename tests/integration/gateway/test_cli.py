"""`python -m gateway compose|serve` as real processes (stopped by PID)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from doorward_kit.net import free_port
from gateway.cli import compose

pytestmark = pytest.mark.integration


def test_compose_function_prints_a_supergraph(subgraphs):
    sdl = compose(subgraphs.urls)
    assert "@join__graph(name: \"reviews\"" in sdl


def test_serve_from_supergraph_file_without_auth(subgraphs, tmp_path):
    path = tmp_path / "supergraph.graphql"
    path.write_text(compose(subgraphs.urls))
    port = free_port()
    env = {**os.environ, "DOORWARD_ENV": "production"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--supergraph", str(path),
                             "--port", str(port), "--no-auth"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway process did not become ready"
            time.sleep(0.1)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        r = httpx.post(f"{url}/graphql", json={"query": "{ me { name reviews { id } } }"})
        assert r.json() == {"data": {"me": {"name": "Ada", "reviews": [{"id": "r1"},
                                                                       {"id": "r3"}]}}}
        # production: no introspection
        r = httpx.post(f"{url}/graphql", json={"query": "{ __schema { types { name } } }"})
        assert r.status_code == 400
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_serve_fails_with_one_error_naming_the_down_subgraph(tmp_path):
    port = free_port()
    dead = free_port()
    env = {**os.environ, "DOORWARD_GATEWAY_SUBGRAPHS":
           f'{{"identity": "http://127.0.0.1:{dead}/graphql"}}',
           "DOORWARD_GATEWAY_STARTUP_TIMEOUT": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", str(port),
                             "--no-auth"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert f"identity at http://127.0.0.1:{dead}/graphql" in err.decode()
    assert "Traceback" not in err.decode()
