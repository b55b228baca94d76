"""How long one anonymous request of at most 4 KB can hold the gateway's event loop.

    .venv/bin/python bench/edge_bench.py [--repeat 5] [--timeout 20] [--gateway-source DIR]

What it does, every process on free loopback ports and stopped by its PID at the end (also on
failure or Ctrl-C):
  1. composes the Doorward supergraph from the identity, workorders and audit subgraph schemas
     (in process: no database needed), identity pointing at a stub that answers `login`;
  2. serves the real gateway app (gateway.server.create_app, authentication on, the real token
     verifier, production settings, rate limit off so every bomb is measured, not refused) in a
     child process, with a loop-lag probe in that process's event loop: a task that sleeps 1 ms
     and records how late it wakes. A request that holds the loop for X ms makes it X ms late;
  3. sends each request of the corpus (fragment, alias, field-merge, directive, variable, token,
     nesting and batch bombs, all anonymous under the public `login` root, each at most 4 KB)
     --repeat times, one at a time, and prints the longest loop hold (wall clock), the loop
     thread's CPU time over that same gap, and the response time, beside an honest login's.
     The goal is under 50 ms for every bomb. On a shared machine the wall figure also counts
     the time the OS gave other processes; the CPU figure is the gateway's own work.

--gateway-source DIR runs the gateway from another checkout (e.g. `git archive main | tar -x -C
DIR`) for before/after figures; a request still running after --timeout seconds is reported as
"> timeout" and the gateway process is restarted. Figures depend on the machine's load: the
probe's idle lateness is printed as the noise floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIMIT = 4096
LOGIN = 'login(email: "a@example.com", password: "x")'
HONEST = (
    "mutation Login($email: String!, $password: String!) { login(email: $email, "
    "password: $password) { accessToken refreshToken expiresAt passwordChangeRequired "
    "mfaEnrollmentRequired user { id displayName roles regions { id name } } } }"
)
HONEST_VARS = {"email": "ada@example.com", "password": "correct horse"}


# ---------------------------------------------------------------------------------------------
# The corpus: each entry is a JSON body (object, or list for a batch) of at most LIMIT bytes.


def encode(body: Any) -> bytes:
    """A corpus entry's request body: JSON, or raw bytes as they are."""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _fit(make: Callable[[int], Any], lo: int = 1, hi: int = 4000, limit: int = LIMIT) -> Any:
    """make(n) for the largest n whose request body still fits in `limit` bytes."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(make(mid))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return make(lo)


def _q(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return body


def fragment_bomb(levels: int) -> str:
    frags = ["fragment F0 on AuthPayload { accessToken }"]
    frags += [
        f"fragment F{i} on AuthPayload {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)
    ]
    return f"mutation {{ {LOGIN} {{ ...F{levels} }} }} " + " ".join(frags)


def alias_bomb(n: int) -> str:
    return "mutation { " + " ".join(f"a{i}: {LOGIN} {{ accessToken }}" for i in range(n)) + " }"


def merge_bomb(n: int) -> str:
    return f"mutation {{ {LOGIN} {{ " + "accessToken " * n + "} }"


def nested_merge_bomb(k: int) -> str:
    inner = "user { " + ("regions { " + "id " * k + "} ") * k + "} "
    return f"mutation {{ {LOGIN} {{ " + inner * k + "} }"


def fragment_merge_bomb(n: int) -> str:
    frags = " ".join(
        f"fragment G{i} on AuthPayload {{ accessToken user {{ id }} }}" for i in range(n)
    )
    return f"mutation {{ {LOGIN} {{ " + " ".join(f"...G{i}" for i in range(n)) + " } } " + frags


def skip_bomb(n: int) -> str:
    return f"mutation {{ {LOGIN} {{ accessToken " + "@skip(if: false) " * n + "} }"


def unknown_directive_bomb(n: int) -> str:
    return f"mutation {{ {LOGIN} {{ accessToken " + "@x " * n + "} }"


def variable_definition_bomb(n: int) -> str:
    defs = " ".join(f"$v{i}: Int" for i in range(n))
    return f"mutation ({defs}) {{ {LOGIN} {{ accessToken }} }}"


def deep_selection_bomb(n: int) -> str:
    return (
        f"mutation {{ {LOGIN} {{ user {{ "
        + "assignedWorkOrders { assignee { " * n
        + "id"
        + " } }" * n
        + " } } }"
    )


def deep_literal_bomb(n: int) -> str:
    return (
        "mutation { login(email: "
        + "{a: " * n
        + "1"
        + "}" * n
        + ', password: "x") { accessToken } }'
    )


def fragment_chain_bomb(n: int) -> str:
    frags = ["fragment C0 on AuthPayload { accessToken }"]
    frags += [f"fragment C{i} on AuthPayload {{ ...C{i - 1} }}" for i in range(1, n)]
    return f"mutation {{ {LOGIN} {{ ...C{n - 1} }} }} " + " ".join(frags)


def inline_nesting_bomb(n: int) -> str:
    return (
        f"mutation {{ {LOGIN} {{ " + "... on AuthPayload { " * n + "accessToken" + " }" * n + " } }"
    )


def token_bomb(n: int) -> str:
    return f"mutation {{ {LOGIN} {{ " + "__typename " * n + "} }"


def comment_bomb(n: int) -> str:
    return f"mutation {{ {LOGIN} {{ accessToken " + "#\n" * n + "} }"


def nested_variable(n: int) -> bytes:
    query = json.dumps(HONEST)
    return (
        f'{{"query": {query}, "variables": {{"password": "x", "email": ' + "[" * n + "]" * n + "}}"
    ).encode()


def batch(make: Callable[[int], str], per_op: int | None = None) -> list[dict[str, Any]]:
    """Ten operations (the default max_batch), each as large as the 4 KB total allows."""

    def body(n: int) -> list[dict[str, Any]]:
        return [_q(make(n))] * 10

    return body(per_op) if per_op is not None else _fit(body)


def corpus() -> list[tuple[str, Any]]:
    honest_login = _q(HONEST, HONEST_VARS)
    return [
        ("fragment bomb, 20 levels (~1 KB)", _q(fragment_bomb(20))),
        ("fragment bomb, 4 KB", _fit(lambda n: _q(fragment_bomb(n)), 1, 300)),
        ("alias bomb", _fit(lambda n: _q(alias_bomb(n)))),
        ("field-merge bomb (one field repeated)", _fit(lambda n: _q(merge_bomb(n)))),
        ("nested field-merge bomb", _fit(lambda n: _q(nested_merge_bomb(n)), 1, 60)),
        ("fragment field-merge bomb", _fit(lambda n: _q(fragment_merge_bomb(n)))),
        ("directive bomb (@skip repeated)", _fit(lambda n: _q(skip_bomb(n)))),
        ("directive bomb (unknown, repeated)", _fit(lambda n: _q(unknown_directive_bomb(n)))),
        ("variable bomb (definitions)", _fit(lambda n: _q(variable_definition_bomb(n)))),
        (
            "variable bomb (4 KB of values)",
            _fit(
                lambda n: {
                    **honest_login,
                    "variables": {**HONEST_VARS, **{f"x{i}": i for i in range(n)}},
                }
            ),
        ),
        ("variable bomb (value nested 1000 deep)", nested_variable(1000)),
        ("variable bomb (value nested 4 KB deep)", _fit(nested_variable)),
        ("deep selection bomb", _fit(lambda n: _q(deep_selection_bomb(n)), 1, 400)),
        ("deep literal bomb", _fit(lambda n: _q(deep_literal_bomb(n)))),
        ("fragment chain bomb", _fit(lambda n: _q(fragment_chain_bomb(n)))),
        ("inline-fragment nesting bomb", _fit(lambda n: _q(inline_nesting_bomb(n)))),
        ("token bomb (__typename repeated)", _fit(lambda n: _q(token_bomb(n)))),
        ("comment bomb", _fit(lambda n: _q(comment_bomb(n)))),
        ("batch: 10 fragment bombs", batch(fragment_bomb)),
        ("batch: 10 alias bombs", batch(alias_bomb)),
        ("batch: 10 field-merge bombs", batch(merge_bomb)),
        ("batch: 10 directive bombs", batch(unknown_directive_bomb)),
        ("batch: 10 variable bombs", batch(variable_definition_bomb)),
        ("batch: 10 token bombs", batch(token_bomb)),
    ]


# ---------------------------------------------------------------------------------------------
# Child process: the real gateway app plus a loop-lag probe


def serve(supergraph_file: str, port: int) -> None:
    import uvicorn

    from gateway.auth import authenticator_from_verifier
    from gateway.server import create_app
    from gateway.settings import GatewaySettings
    from tests.fixtures.tokens import TestTokenIssuer

    settings = GatewaySettings(supergraph_file=supergraph_file, port=port, rate_limit_per_second=0)
    # The real verifier (against a static key): anonymous requests never get past it anyway.
    gateway = create_app(settings, authenticator_from_verifier(TestTokenIssuer().verifier()))
    probe = {"max": 0.0, "cpu": 0.0}

    async def watch() -> None:
        # Wall lateness is what other requests feel; on a shared machine it also counts the
        # time the OS ran other processes, so the loop thread's CPU time over the same gap is
        # kept beside it (the work the gateway itself did while nothing else could run).
        loop = asyncio.get_running_loop()
        while True:
            started, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(0.001)
            probe["max"] = max(probe["max"], loop.time() - started - 0.001)
            probe["cpu"] = max(probe["cpu"], time.thread_time() - cpu)

    tasks: list[asyncio.Task[None]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not tasks:
            tasks.append(asyncio.get_running_loop().create_task(watch()))
        if scope["type"] == "http" and scope["path"] == "/_bench/lag":
            body = json.dumps(
                {"max_ms": probe["max"] * 1000, "cpu_ms": probe["cpu"] * 1000}
            ).encode()
            probe["max"] = probe["cpu"] = 0.0
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await gateway(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_identity_stub(port: int) -> None:
    """A stand-in identity subgraph: answers every operation with one AuthPayload."""
    import uvicorn

    answer = json.dumps(
        {
            "data": {
                "login": {
                    "accessToken": "a",
                    "refreshToken": "r",
                    "expiresAt": "2030-01-01T00:00:00+00:00",
                    "passwordChangeRequired": False,
                    "mfaEnrollmentRequired": False,
                    "user": {
                        "id": "u1",
                        "displayName": "Ada",
                        "roles": ["TECHNICIAN"],
                        "regions": [{"id": "r1", "name": "North"}],
                    },
                }
            }
        }
    ).encode()

    from tests.fixtures.asgi import fixed_json_app

    app = fixed_json_app(answer)

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
    )


# ---------------------------------------------------------------------------------------------
# Driver


def compose_supergraph(identity_url: str) -> str:
    from gateway.composition import compose
    from services.audit.api.graphql import build_schema as audit_schema
    from services.identity.api.graphql import build_schema as identity_schema
    from services.workorders.api.graphql import build_schema as workorders_schema

    unused = "http://127.0.0.1:9/graphql"  # the corpus never reaches workorders or audit
    sdls = {}
    for name, build, url in (
        ("identity", identity_schema, identity_url),
        ("workorders", workorders_schema, unused),
        ("audit", audit_schema, unused),
    ):
        result = build().execute_sync("{ _service { sdl } }")
        assert result.data is not None, result.errors
        sdls[name] = (url, result.data["_service"]["sdl"])
    return compose(sdls)


class Child:
    """A child process started by this benchmark, stopped by its own PID."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_ready(url: str, child: Child, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({child.proc.returncode})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


@contextlib.contextmanager
def gateway_process(supergraph: Path, source: Path | None) -> Iterator[str]:
    from doorward_kit.net import free_port

    port = free_port()
    env = dict(os.environ, DOORWARD_ENV="production", OTEL_TRACES_EXPORTER="none")
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), str(ROOT)])
    child = Child(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(supergraph), str(port)], env
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", child)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()


def measure(
    base: str, body: Any, repeat: int, timeout: float
) -> tuple[list[float], list[float], list[float], int] | None:
    """(loop holds ms, their CPU ms, response times ms, last status), or None after a
    timeout."""
    holds: list[float] = []
    cpus: list[float] = []
    times: list[float] = []
    status = 0
    raw = encode(body)
    with httpx.Client(timeout=timeout) as client:
        for _ in range(repeat):
            client.get(f"{base}/_bench/lag")  # reset
            started = time.perf_counter()
            try:
                r = client.post(
                    f"{base}/graphql", content=raw, headers={"content-type": "application/json"}
                )
            except httpx.TimeoutException:
                return None
            times.append((time.perf_counter() - started) * 1000)
            status = r.status_code
            time.sleep(0.01)  # let the probe wake once more
            lag = client.get(f"{base}/_bench/lag").json()
            holds.append(lag["max_ms"])
            cpus.append(lag["cpu_ms"])
    return holds, cpus, times, status


def idle_lateness(base: str, repeat: int) -> float:
    late = []
    with httpx.Client(timeout=10) as client:
        for _ in range(repeat):
            client.get(f"{base}/_bench/lag")
            time.sleep(0.1)
            late.append(client.get(f"{base}/_bench/lag").json()["max_ms"])
    return max(late)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds a request may run before it counts as a freeze",
    )
    ap.add_argument(
        "--gateway-source",
        type=Path,
        default=None,
        help="run the gateway from this checkout (before/after figures)",
    )
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--serve-identity", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        if os.environ.get("PYTHONPATH"):
            sys.path.insert(0, os.environ["PYTHONPATH"].split(os.pathsep)[0])
        serve(args.serve[0], int(args.serve[1]))
        return
    if args.serve_identity:
        serve_identity_stub(args.serve_identity)
        return

    from doorward_kit.net import free_port

    stub_port = free_port()
    stub = Child(
        [sys.executable, str(Path(__file__).resolve()), "--serve-identity", str(stub_port)],
        dict(os.environ),
    )
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    try:
        wait_ready(f"http://127.0.0.1:{stub_port}/", stub)
        supergraph = workdir / "supergraph.graphql"
        supergraph.write_text(compose_supergraph(f"http://127.0.0.1:{stub_port}/graphql"))
        cases = [("honest login", _q(HONEST, HONEST_VARS)), *corpus()]
        for name, body in cases:
            size = len(encode(body))
            assert size <= LIMIT, (name, size)
        run(cases, supergraph, args)
    finally:
        stub.stop()
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()


def run(cases: list[tuple[str, Any]], supergraph: Path, args: argparse.Namespace) -> None:
    source = args.gateway_source.resolve() if args.gateway_source else None
    print(f"gateway from {source or ROOT}; each request {args.repeat}x, one at a time")
    print(
        f"{'request':40} {'bytes':>5} {'status':>6} {'loop held max':>13} "
        f"{'median':>7} {'its CPU':>9} {'response max':>12}"
    )
    worst = 0.0
    stack = contextlib.ExitStack()
    base = stack.enter_context(gateway_process(supergraph, source))
    with httpx.Client(timeout=args.timeout) as client:  # warm-up: imports, connections, plans
        for _ in range(3):
            client.post(
                f"{base}/graphql",
                content=encode(cases[0][1]),
                headers={"content-type": "application/json"},
            )
    print(
        f"{'(idle: probe lateness, the noise floor)':40} {'':>5} {'':>6} "
        f"{idle_lateness(base, args.repeat):10.1f} ms"
    )
    try:
        for name, body in cases:
            size = len(encode(body))
            got = measure(base, body, args.repeat, args.timeout)
            if got is None:
                print(
                    f"{name:40} {size:5} {'-':>6} {'> ' + str(int(args.timeout)) + ' s':>13}"
                    f" (timed out: the gateway is frozen; restarting it)"
                )
                stack.close()
                stack = contextlib.ExitStack()
                base = stack.enter_context(gateway_process(supergraph, source))
                worst = float("inf") if name != "honest login" else worst
                continue
            holds, cpus, times, status = got
            if name != "honest login":
                worst = max(worst, max(holds))
            print(
                f"{name:40} {size:5} {status:6} {max(holds):10.1f} ms "
                f"{statistics.median(holds):4.1f} ms {max(cpus):6.1f} ms {max(times):9.1f} ms"
            )
    finally:
        stack.close()
    verdict = "met" if worst < 50 else "NOT met"
    print(f"longest loop hold of any bomb: {worst:.1f} ms (goal < 50 ms: {verdict})")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
