"""The board's hops with no work in them: what the fixed architecture costs before any of
Doorward's own code runs, in latency and in CPU.

    .venv/bin/python bench/topology_floor.py [--sequential 200] [--seconds 10]
                                             [--concurrency 16] [--warm 2]

`bench/board_bench.py` runs it too, with the bodies of the stack's own board (the plan's
requests and answers as the subgraphs sent them, a GetSecretRefs request and answer built for
its secret references). Standalone it uses bodies of the board's sizes.

The board's path through the architecture (README, "Architecture"): the client's request to
the gateway; the gateway's request to workorders; workorders' unary gRPC call to secrets over
mutual TLS; then the gateway's requests to identity and audit, in parallel; the answer. Here
each of those processes is a separate process doing only that:

- gateway, workorders, identity, audit: a raw ASGI app (less than FastAPI or strawberry) under
  uvicorn with uvloop and httptools, as the stack runs them; each answers a fixed body through
  the kit's coalescing protocol (headers and body in one send), as the stack's processes do;
- the gateway posts the request bodies over its own lean keep-alive client
  (`gateway/transport.py`, unsigned here), workorders first, then identity and audit at once;
  it answers the board's answer as fixed bytes once all three answered 200 (no parsing, no
  merging), else 502;
- workorders makes one unary call to secrets with a fixed request over mutual TLS (EC P-256, as
  `doorward up` issues), bytes in and out (no protobuf), and answers once it came back (a failed
  call is a 500);
- no SQL, no GraphQL, no signature, no session check, no audit, no spans.

Two paths are timed at concurrency 1, interleaved: the whole one, and the same with workorders
not waiting for secrets (`/beside`: in the stack, workorders' GetSecretRefs runs beside its
reads of the sites and customers). The hops' CPU per board at the given concurrency bounds the
board's from below (PostgreSQL not counted), process by process; on `/beside` it is what the
board's critical path spends at least (the secrets call's own CPU overlaps with reads the floor
counts): board_bench adds those of the processes a board crosses one after the other for a
lower bound of its p50. Every process is on a free loopback port and stopped by its PID,
also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HTTP_ROLES = ("gateway", "workorders", "identity", "audit")
SECRETS_SERVICE = "doorward.secrets.v1.Secrets"  # proto/doorward/secrets/v1
SECRETS_METHOD = f"/{SECRETS_SERVICE}/GetSecretRefs"
# Workorders answers without waiting for secrets on this path (see the docstring).
BESIDE = "/beside"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Bodies:
    """What each hop of the board sends and answers, as bytes on the wire."""

    gateway_answer: bytes
    workorders_request: bytes
    workorders_answer: bytes
    identity_request: bytes
    identity_answer: bytes
    audit_request: bytes
    audit_answer: bytes
    secrets_request: bytes
    secrets_answer: bytes

    def sizes(self) -> str:
        return ", ".join(f"{k} {len(v)}" for k, v in asdict(self).items())

    def dump(self, path: Path) -> None:
        path.write_text(
            json.dumps({k: base64.b64encode(v).decode() for k, v in asdict(self).items()})
        )

    @classmethod
    def load(cls, path: Path) -> Bodies:
        return cls(**{k: base64.b64decode(v) for k, v in json.loads(path.read_text()).items()})

    @classmethod
    def synthetic(cls) -> Bodies:
        """Bodies of the sizes a board's hops carry (measured by board_bench on 2026-11-30)."""

        def blob(size: int) -> bytes:
            text = json.dumps({"data": "x" * size})
            return text.encode()[: max(size, 16)]

        return cls(
            gateway_answer=blob(16_000),
            workorders_request=blob(450),
            workorders_answer=blob(6_500),
            identity_request=blob(700),
            identity_answer=blob(500),
            audit_request=blob(1_700),
            audit_answer=blob(9_000),
            secrets_request=os.urandom(230),
            secrets_answer=os.urandom(700),
        )


# ---- the processes -------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def fixed_app(body: bytes, before: Callable[[], Awaitable[None]] | None = None) -> Any:
    """Answers `body`; first awaits `before` unless the path is BESIDE."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await _read_body(receive)
        if before is not None and scope["path"] != BESIDE:
            await before()
        await _answer(send, body)

    return app


def gateway_app(bodies: Bodies, ports: dict[str, int]) -> Any:
    import httpx

    from gateway.transport import SubgraphTransport

    origins = {r: f"http://127.0.0.1:{ports[r]}" for r in ("workorders", "identity", "audit")}
    transports = {r: SubgraphTransport(o, max_connections=64) for r, o in origins.items()}
    graphql = {r: httpx.URL(o + "/graphql") for r, o in origins.items()}
    beside = httpx.URL(origins["workorders"] + BESIDE)
    headers = {"content-type": "application/json"}

    async def post(role: str, url: httpx.URL, body: bytes) -> bool:
        try:
            status, _ = await transports[role].post(url, body, headers)
        except httpx.TransportError:  # the subgraph is gone: no answer, as a 5xx is none
            return False
        return status == 200

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await _read_body(receive)
        first = graphql["workorders"] if scope["path"] != BESIDE else beside
        answered = await post("workorders", first, bodies.workorders_request) and all(
            await asyncio.gather(
                post("identity", graphql["identity"], bodies.identity_request),
                post("audit", graphql["audit"], bodies.audit_request),
            )
        )
        if not answered:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await _answer(send, bodies.gateway_answer)

    return app


def _tls(folder: Path) -> tuple[bytes, bytes, bytes]:
    return (
        (folder / "key.pem").read_bytes(),
        (folder / "cert.pem").read_bytes(),
        (folder / "ca.pem").read_bytes(),
    )


def secrets_call(bodies: Bodies, port: int, tls: Path) -> Callable[[], Awaitable[None]]:
    import grpc

    key, cert, ca = _tls(tls / "workorders")
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert),
        options=[("grpc.ssl_target_name_override", "secrets.doorward.internal")],
    )
    call = channel.unary_unary(SECRETS_METHOD)

    async def ask() -> None:
        # wait_for_ready: a call made while the channel (re)connects waits instead of failing.
        await call(bodies.secrets_request, timeout=30, wait_for_ready=True)

    return ask


async def serve_secrets(bodies: Bodies, port: int, tls: Path) -> None:
    import grpc

    async def answer(request: bytes, context: Any) -> bytes:
        return bodies.secrets_answer

    key, cert, ca = _tls(tls / "secrets")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SECRETS_SERVICE,
                {"GetSecretRefs": grpc.unary_unary_rpc_method_handler(answer)},
            )
        ]
    )
    credentials = grpc.ssl_server_credentials([(key, cert)], ca, require_client_auth=True)
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    await server.wait_for_termination()


async def serve_http(app: Any, port: int) -> None:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from doorward_kit.http import coalescing_protocol

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",
        http=coalescing_protocol(HttpToolsProtocol),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # A request left waiting (workorders' call to a secrets that is gone) does not hold
        # the stop for long.
        timeout_graceful_shutdown=1,
    )
    await uvicorn.Server(config).serve()


def serve(role: str, spec: Path, ports: dict[str, int], tls: Path) -> None:
    import uvloop

    bodies = Bodies.load(spec)
    if role == "secrets":
        main = serve_secrets(bodies, ports["secrets"], tls)
    elif role == "gateway":
        main = serve_http(gateway_app(bodies, ports), ports["gateway"])
    elif role == "workorders":

        async def workorders() -> None:
            ask = secrets_call(bodies, ports["secrets"], tls)
            await serve_http(fixed_app(bodies.workorders_answer, ask), ports["workorders"])

        main = workorders()
    else:
        answer = bodies.identity_answer if role == "identity" else bodies.audit_answer
        main = serve_http(fixed_app(answer), ports[role])
    uvloop.run(main)


# ---- the measurement -----------------------------------------------------------------------


def _issue_tls(root: Path) -> None:
    from tests.fixtures.pki import TestCA

    ca = TestCA("Doorward bench CA")
    for service in ("workorders", "secrets"):
        key, cert = ca.issue(service)
        folder = root / service
        folder.mkdir(parents=True)
        (folder / "key.pem").write_bytes(key)
        (folder / "cert.pem").write_bytes(cert)
        (folder / "ca.pem").write_bytes(ca.ca_pem)


@dataclass
class Skeleton:
    """The running skeleton: the gateway's origin and every process."""

    origin: str
    children: dict[str, subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return self.origin + "/graphql"

    @property
    def beside_url(self) -> str:
        return self.origin + BESIDE

    def pids(self) -> dict[str, int]:
        return {role: child.pid for role, child in self.children.items()}

    def check_alive(self) -> None:
        for role, child in self.children.items():
            if child.poll() is not None:
                raise RuntimeError(f"the skeleton's {role} exited with code {child.returncode}")


@contextlib.contextmanager
def running(bodies: Bodies) -> Iterator[Skeleton]:
    """The five skeleton processes (secrets first: workorders calls it), stopped by their PIDs
    on the way out, whatever happened."""
    import shutil

    from doorward_kit.net import free_port

    children: dict[str, subprocess.Popen[bytes]] = {}
    root = Path(tempfile.mkdtemp(prefix="doorward-hops-"))
    try:
        spec = root / "bodies.json"
        bodies.dump(spec)
        _issue_tls(root / "tls")
        ports = {role: free_port() for role in ("secrets", *HTTP_ROLES)}
        for role in ports:
            children[role] = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "serve",
                    role,
                    "--spec",
                    str(spec),
                    "--tls",
                    str(root / "tls"),
                    "--ports",
                    json.dumps(ports),
                ],
                cwd=ROOT,
            )
        yield Skeleton(f"http://127.0.0.1:{ports['gateway']}", children)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        shutil.rmtree(root, ignore_errors=True)


async def wait_until_answering(skeleton: Skeleton, client: Any, seconds: float = 60.0) -> None:
    """Until the whole path answers 200 with the board's answer (every process up, the gRPC
    channel connected); a process that died is named at once."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        skeleton.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            answer = await client.post(skeleton.url, content=b"{}", timeout=5)
            if answer.status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the skeleton did not answer the board within {seconds:.0f} s")
        await asyncio.sleep(0.1)


async def measure(
    bodies: Bodies,
    sequential: int,
    concurrency: int,
    seconds: float,
    warm: float,
) -> dict[str, float]:
    """At concurrency 1, interleaved (a busy moment of the machine costs each alike): the whole
    path and the path with workorders not waiting for secrets, p50 (and the whole path's p99).
    At `concurrency`, each path in turn: requests a second on the whole path, and CPU per board
    of the five processes on both ("cpu ROLE", "beside cpu ROLE"; ms). Every answer must be
    the board's, else it raises."""
    import httpx

    # board_bench's own percentile and /proc reading (it imports this module at its top, so
    # here, not there).
    from bench.board_bench import cpu_seconds, pct

    with running(bodies) as skeleton:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def call(url: str) -> None:
                answer = await client.post(url, content=bodies.workorders_request)
                if answer.status_code != 200 or len(answer.content) != len(bodies.gateway_answer):
                    raise RuntimeError(f"the skeleton answered {answer.status_code}")

            async def board() -> None:
                await call(skeleton.url)

            async def board_beside() -> None:
                await call(skeleton.beside_url)

            await wait_until_answering(skeleton, client)
            for _ in range(20):
                await board()
            rounds: list[list[float]] = [[], []]
            timed = [board, board_beside]
            for _ in range(sequential):
                for i, timed_call in enumerate(timed):
                    started = time.perf_counter()
                    await timed_call()
                    rounds[i].append(time.perf_counter() - started)

            async def load(path: Callable[[], Awaitable[None]]) -> tuple[float, dict[str, float]]:
                """Requests a second on `path` at `concurrency` (after `warm` seconds of it),
                and CPU per board of each process (ms)."""
                done = 0

                async def worker(stop: float) -> None:
                    nonlocal done
                    while time.perf_counter() < stop:
                        await path()
                        done += 1

                warm_until = time.perf_counter() + warm
                await asyncio.gather(*(worker(warm_until) for _ in range(concurrency)))
                done = 0
                pids = skeleton.pids()
                cpu_from = cpu_seconds(pids)
                started = time.perf_counter()
                await asyncio.gather(*(worker(started + seconds) for _ in range(concurrency)))
                took = time.perf_counter() - started
                cpu_to = cpu_seconds(pids)
                return done / took, {r: (cpu_to[r] - cpu_from[r]) * 1000 / done for r in pids}

            rps, per_board = await load(board)
            _, per_board_beside = await load(board_beside)
            skeleton.check_alive()
    return {
        "p50": pct(rounds[0], 0.5),
        "p99": pct(rounds[0], 0.99),
        "beside p50": pct(rounds[1], 0.5),
        "rps": rps,
        **{f"cpu {r}": v for r, v in per_board.items()},
        "cpu total": sum(per_board.values()),
        # Without the call to secrets: what the board's critical path spends at least.
        **{f"beside cpu {r}": v for r, v in per_board_beside.items()},
    }


def report(label: str, figures: dict[str, float], concurrency: int, load: str) -> None:
    print(
        f"[{label}] hops alone         c=1 p50 {figures['p50']:7.2f} ms  p99 "
        f"{figures['p99']:7.2f} ms   c={concurrency} {figures['rps']:7.1f} req/s  load {load}",
        flush=True,
    )
    print(
        f"[{label}] hops alone, workorders not waiting for secrets: c=1 p50 "
        f"{figures['beside p50']:7.2f} ms",
        flush=True,
    )
    cpu = [(k[4:], v) for k, v in figures.items() if k.startswith("cpu ") and k != "cpu total"]
    beside = [(k[11:], v) for k, v in figures.items() if k.startswith("beside cpu ")]
    print(
        f"[{label}] hops alone: CPU per board, c={concurrency} (ms): "
        + ", ".join(f"{role} {v:.1f}" for role, v in cpu)
        + f"; total {figures['cpu total']:.1f}",
        flush=True,
    )
    print(
        f"[{label}] hops alone, workorders not waiting for secrets: CPU per board, "
        f"c={concurrency} (ms): " + ", ".join(f"{role} {v:.2f}" for role, v in beside),
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command")
    child = sub.add_parser("serve")
    child.add_argument("role", choices=(*HTTP_ROLES, "secrets"))
    child.add_argument("--spec", type=Path, required=True)
    child.add_argument("--tls", type=Path, required=True)
    child.add_argument("--ports", required=True)
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--warm", type=float, default=2.0)
    args = ap.parse_args()
    if args.command == "serve":
        # Secrets (no uvicorn) ends at once: nothing to flush, and no gRPC teardown noise. The
        # HTTP roles get uvicorn's own handler once it serves: a graceful stop.
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        serve(args.role, args.spec, json.loads(args.ports), args.tls)
        return 0
    bodies = Bodies.synthetic()
    print(f"bodies (bytes): {bodies.sizes()}", flush=True)
    figures = asyncio.run(
        measure(bodies, args.sequential, args.concurrency, args.seconds, args.warm)
    )
    report("hops", figures, args.concurrency, " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
