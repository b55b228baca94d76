"""The board's hops with no work in them: what the fixed architecture costs before any of
Doorward's own code runs, in latency and in CPU.

    .venv/bin/python bench/topology_floor.py [--sequential 200] [--seconds 10]
                                             [--concurrency 16] [--warm 2]

`bench/board_bench.py` runs it too, with the stack's real request and answer bodies, so that
its figures sit beside the floor's of the same run. Standalone it uses bodies of the board's
sizes.

The board's path through the architecture (README, "Architecture"): the client's request to
the gateway; the gateway's request to workorders; workorders' unary gRPC call to secrets over
mutual TLS; then the gateway's requests to identity and audit, in parallel; the answer. Here
each of those processes is a separate process doing only that:

- gateway, workorders, identity, audit: a raw ASGI app (less than FastAPI or strawberry) under
  uvicorn with uvloop and httptools, as the stack runs them; each answers a fixed body;
- they answer through the kit's coalescing protocol (headers and body in one send), as the
  stack's processes do;
- the gateway posts the request bodies over its own lean keep-alive client
  (`gateway/transport.py`, unsigned here), workorders first, then identity and audit at once,
  and answers the three answers concatenated (no parsing, no merging);
- workorders makes one unary call to secrets with a fixed request over mutual TLS (EC P-256, as
  `doorward up` issues), bytes in and out (no protobuf);
- no SQL, no GraphQL, no signature, no session check, no audit, no spans.

Anything real costs at least this, so `hops p50 + floor p50` bounds the board's p50 from below,
and the hops' CPU per board bounds its CPU per board from below (PostgreSQL not counted). Every
process is on a free loopback port and stopped by its PID, also on failure or Ctrl-C.
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
SECRETS_METHOD = "/doorward.secrets.v1.SecretsService/GetSecretRefs"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Bodies:
    """What each hop of the board sends and answers, as bytes on the wire."""

    gateway_answer: bytes  # unused by the skeleton (it concatenates), kept for the sizes line
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
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await _read_body(receive)
        if before is not None:
            await before()
        await _answer(send, body)

    return app


def gateway_app(bodies: Bodies, ports: dict[str, int]) -> Any:
    import httpx

    from gateway.transport import SubgraphTransport

    urls = {
        r: httpx.URL(f"http://127.0.0.1:{ports[r]}/graphql")
        for r in ("workorders", "identity", "audit")
    }
    transports = {r: SubgraphTransport(u, max_connections=64) for r, u in urls.items()}
    headers = {"content-type": "application/json"}

    async def post(role: str, body: bytes) -> bytes:
        _, answer = await transports[role].post(urls[role], body, headers)
        return answer

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await _read_body(receive)
        first = await post("workorders", bodies.workorders_request)
        people, trails = await asyncio.gather(
            post("identity", bodies.identity_request), post("audit", bodies.audit_request)
        )
        await _answer(send, b"[" + first + b"," + people + b"," + trails + b"]")

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
        await call(bodies.secrets_request, timeout=30)

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
                "doorward.secrets.v1.SecretsService",
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


@contextlib.contextmanager
def running(bodies: Bodies) -> Iterator[tuple[str, dict[str, int]]]:
    """The five skeleton processes; yields the gateway's URL and every process's PID."""
    from doorward_kit.net import free_port

    root = Path(tempfile.mkdtemp(prefix="doorward-hops-"))
    spec = root / "bodies.json"
    bodies.dump(spec)
    _issue_tls(root / "tls")
    ports = {role: free_port() for role in (*HTTP_ROLES, "secrets")}
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
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
        yield (
            f"http://127.0.0.1:{ports['gateway']}/graphql",
            {r: c.pid for r, c in children.items()},
        )
    finally:
        for child in children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(
    bodies: Bodies, sequential: int, concurrency: int, seconds: float, warm: float
) -> dict[str, float]:
    """p50 and p99 at concurrency 1, requests a second at `concurrency`, and CPU per board of
    the five processes (ms) at `concurrency`."""
    import httpx

    with running(bodies) as (url, pids):
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            request = bodies.workorders_request

            async def board() -> None:
                answer = await client.post(url, content=request)
                answer.raise_for_status()

            for _ in range(300):
                try:
                    await board()
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the skeleton processes did not answer within 30 s")
            for _ in range(20):
                await board()
            lat = []
            for _ in range(sequential):
                started = time.perf_counter()
                await board()
                lat.append(time.perf_counter() - started)

            done = 0

            async def worker(stop: float) -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    await board()
                    done += 1

            await asyncio.gather(*(worker(time.perf_counter() + warm) for _ in range(concurrency)))
            done = 0
            cpu_from = {r: _cpu(p) for r, p in pids.items()}
            started = time.perf_counter()
            stop = started + seconds
            await asyncio.gather(*(worker(stop) for _ in range(concurrency)))
            took = time.perf_counter() - started
            cpu_to = {r: _cpu(p) for r, p in pids.items()}
    per_board = {r: (cpu_to[r] - cpu_from[r]) * 1000 / done for r in pids}
    return {
        "p50": _pct(lat, 0.5),
        "p99": _pct(lat, 0.99),
        "rps": done / took,
        **{f"cpu {r}": v for r, v in per_board.items()},
        "cpu total": sum(per_board.values()),
    }


def report(label: str, figures: dict[str, float], concurrency: int, load: str) -> None:
    print(
        f"[{label}] hops alone         c=1 p50 {figures['p50']:7.2f} ms  p99 "
        f"{figures['p99']:7.2f} ms   c={concurrency} {figures['rps']:7.1f} req/s  load {load}",
        flush=True,
    )
    print(
        f"[{label}] hops alone: CPU per board, c={concurrency} (ms): "
        + ", ".join(
            f"{k[4:]} {v:.1f}"
            for k, v in figures.items()
            if k.startswith("cpu ") and k != "cpu total"
        )
        + f"; total {figures['cpu total']:.1f}",
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
        # Nothing to flush or close: a skeleton process ends at once (no gRPC teardown noise).
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
