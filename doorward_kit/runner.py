"""Runs one service process: FastAPI under uvicorn and a grpc.aio server in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import uvloop
from fastapi import FastAPI

from doorward_kit.gc_tuning import settle_heap
from doorward_kit.grpc import GrpcServer
from doorward_kit.http import bind_sockets, coalescing_protocol, with_metrics_port
from doorward_kit.https_peer import peer_protocol
from doorward_kit.logging import setup_logging
from doorward_kit.telemetry import setup_telemetry
from doorward_kit.tls import CredentialFolder, CredentialsError

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class ServiceParts:
    app: FastAPI
    host: str
    http_port: int
    grpc: GrpcServer | None = None
    # Long-running coroutines (outbox senders, key renewers); cancelled at shutdown.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    close: Callable[[], Coroutine[Any, Any, None]] | None = None
    # Mutual TLS on the HTTP port with this certificate folder (doorward_kit.tls): clients must
    # present a certificate of the Doorward CA. None: plain HTTP (the default).
    http_tls: Path | None = None
    # A port of its own for GET /metrics (the app must then not serve it: create_app(
    # metrics=False)): for a port clients reach through a reverse proxy, where every request
    # comes from the proxy's, allowed, address. None: /metrics stays on the app's port.
    metrics_port: int | None = None
    # Who may read it there (None: DOORWARD_METRICS_ALLOWED_NETWORKS).
    metrics_allowed_networks: str | None = None
    # How long an idle HTTP connection stays open (uvicorn's default, 5 s, for ports strangers
    # reach: an idle connection held open is a cheap way to tie up a server).
    keep_alive_seconds: int = 5


def _tls_options(folder: Path | None) -> dict[str, Any]:
    if folder is None:
        return {}
    creds = CredentialFolder(folder)
    creds.load()  # refuse to start on an unusable folder, with the reason
    return {
        # identity.pem holds the key and the chain; OpenSSL reads each from it.
        "ssl_certfile": str(creds.identity_file),
        "ssl_keyfile": str(creds.identity_file),
        "ssl_ca_certs": str(creds.ca_file),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        # Requests learn the service the client certificate names (doorward_kit.https_peer).
        "http": coalescing_protocol(peer_protocol()),
    }


class _HandshakeReload:
    """Renewed certificates for every new connection, as gRPC's dynamic server credentials
    do: at each TLS handshake (OpenSSL's ClientHello callback, which runs with or without
    SNI) the files are looked at (two stat calls) and, once they changed, loaded into a fresh
    context that this handshake switches to; the server's own context is reloaded for the
    ones after it. A periodic reload left the server presenting a certificate already past
    its end for up to its period after a renewal; a client never meets one now."""

    def __init__(self, context: ssl.SSLContext, folder: Path) -> None:
        self.context = context
        self.creds = CredentialFolder(folder)
        self.stamp = self.creds.stamp()

    def __call__(self, sock: Any, _server_name: str | None, _context: ssl.SSLContext) -> None:
        try:
            fresh = self.creds.stamp()
            if fresh == self.stamp:
                return
            self.creds.load()  # a usable pair, or keep serving the current one
            identity, ca = str(self.creds.identity_file), str(self.creds.ca_file)
            renewed = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            renewed.verify_mode = ssl.CERT_REQUIRED
            renewed.load_cert_chain(identity)
            renewed.load_verify_locations(cafile=ca)
            sock.context = renewed  # this handshake: the new chain
            self.context.load_cert_chain(identity)  # every later one
            self.context.load_verify_locations(cafile=ca)
            self.stamp = fresh
            log.info(
                "HTTPS certificate reloaded", extra={"fields": {"folder": str(self.creds.path)}}
            )
        except (CredentialsError, OSError, ssl.SSLError) as exc:
            log.warning("HTTPS certificate not reloaded", extra={"fields": {"why": str(exc)}})


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop's event loop (libuv), as uvicorn runs the
    gateway. asyncio's own loop (selectors, Python transports) was a tenth of every service's
    CPU under the board bench: each asyncpg round trip, HTTP answer and gRPC completion is a
    few loop turns, socket reads and writes, and callbacks."""
    return uvloop.run(main)


def run_service(name: str, build: Callable[[], Coroutine[Any, Any, ServiceParts]]) -> None:
    setup_logging(name)
    setup_telemetry(name)
    run_loop(_serve(name, build))


async def _serve(name: str, build: Callable[[], Coroutine[Any, Any, ServiceParts]]) -> None:
    parts = await build()
    settle_heap()
    async with serving(parts, name) as http:
        log.info(
            "%s serving",
            name,
            extra={"fields": {"http_port": parts.http_port, "metrics_port": parts.metrics_port}},
        )
        # uvicorn handles SIGINT/SIGTERM itself and then returns.
        await http.finished
    log.info("%s stopped", name)


@dataclass
class RunningHttp:
    server: uvicorn.Server
    finished: asyncio.Task[None]


@contextlib.asynccontextmanager
async def serving(parts: ServiceParts, name: str) -> AsyncIterator[RunningHttp]:
    """Start the parts (gRPC, HTTP, background jobs); stop them all on exit, whatever happens.

    The process entry point and the in-process integration tests both use this."""
    app: Any = parts.app
    if parts.metrics_port is not None:
        # One server on two sockets (doorward_kit.http.ByLocalPort tells them apart by the
        # port the request arrived on, never by anything the client says).
        app = with_metrics_port(app, parts.metrics_port, parts.metrics_allowed_networks)
    options: dict[str, Any] = {
        # An answer's headers and body in one socket send (doorward_kit.http).
        "http": coalescing_protocol(),
        **_tls_options(parts.http_tls),
    }
    config = uvicorn.Config(
        app,
        host=parts.host,
        port=parts.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=parts.keep_alive_seconds,
        # uvicorn would replace the TCP peer by X-Forwarded-For from loopback peers: the
        # peer is the only address a caller cannot write (secrets REST records it).
        proxy_headers=False,
        **options,
    )
    if parts.http_tls is not None:
        config.load()  # builds the server's SSLContext, which the reload then keeps current
        assert config.ssl is not None
        config.ssl.sni_callback = _HandshakeReload(config.ssl, parts.http_tls)
    sockets = None
    if parts.metrics_port is not None:
        sockets = bind_sockets(app, parts.host, [parts.http_port, parts.metrics_port])
    server = uvicorn.Server(config)
    if parts.grpc is not None:
        try:
            await parts.grpc.start()
        except BaseException:
            for sock in sockets or []:
                sock.close()
            raise
    finished = asyncio.create_task(server.serve(sockets=sockets), name=f"{name}-http")
    tasks = [asyncio.create_task(job(), name=f"{name}-background") for job in parts.background]
    try:
        while not server.started:
            if finished.done():
                finished.result()  # re-raise why it stopped
                raise RuntimeError(f"{name}: the HTTP server stopped while starting")
            await asyncio.sleep(0.02)
        yield RunningHttp(server, finished)
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(10):
                await finished
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if parts.grpc is not None:
            await parts.grpc.stop(0.5)
        for sock in sockets or []:
            with contextlib.suppress(OSError):
                sock.close()
        if parts.close is not None:
            await parts.close()
