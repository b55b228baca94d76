"""FastAPI app factory for every HTTP process: health probes, error mapping, tracing."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.headers import SecurityHeaders
from doorward_kit.telemetry import instrument_fastapi

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


# FastAPI 0.16x traces, meters and logs every request by itself once a global OpenTelemetry
# provider exists, unless the legacy instrumentation is found in the middleware stack. Doorward
# has its own server spans (the kit's instrumentation; the gateway's edge span, which starts a
# new trace): FastAPI's would be a second span per request, exported and stored for nothing,
# and at the gateway one whose parent is whatever `traceparent` a client sent.
_NO_OWN_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def fastapi_options() -> dict[str, Any]:
    """Keyword arguments for every FastAPI app of Doorward (its own telemetry off)."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": dict(_NO_OWN_TELEMETRY)}
    return {}


ASGICallable = Callable[[Any, Any, Any], Awaitable[None]]


class ServiceApp(FastAPI):
    """A service's FastAPI app, with room for pure ASGI edges: a POST to a path in `post_edges`
    is answered by its edge before FastAPI's middleware stack (doorward_kit.subgraph_edge: a
    subgraph's POST /graphql). Everything else, and the lifespan, goes through FastAPI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.post_edges: dict[str, ASGICallable] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            edge = self.post_edges.get(scope["path"])
            if edge is not None:
                await edge(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def error_response(error: DoorwardError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=error.http_status, headers=headers)


def add_metrics_route(app: FastAPI, allowed_networks: str | None = None) -> None:
    """GET /metrics (Prometheus text, or OpenMetrics with trace-id exemplars when asked for),
    answered only to scrapers in `allowed_networks` (comma-separated CIDRs; default
    DOORWARD_METRICS_ALLOWED_NETWORKS, else loopback): counts are not for the internet."""
    import ipaddress

    from doorward_kit.metrics import render
    from doorward_kit.settings import StackSettings

    spec = (
        allowed_networks
        if allowed_networks is not None
        else (StackSettings().metrics_allowed_networks)
    )
    networks = [ipaddress.ip_network(part.strip()) for part in spec.split(",") if part.strip()]

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        peer = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            address = None
        if address is None or not any(address in network for network in networks):
            return error_response(DoorwardError(ErrorCode.FORBIDDEN, "metrics are not served here"))
        body, content_type = render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)


def metrics_only_app(allowed_networks: str | None = None) -> FastAPI:
    """An app that answers GET /metrics and nothing else: for a port of its own, which a
    NetworkPolicy can open to the scrapers alone (a path on a public port cannot be told apart
    from the API by a NetworkPolicy, and behind a reverse proxy every request comes from the
    proxy's address)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    add_metrics_route(app, allowed_networks)
    return app


def with_metrics_port(app: Any, metrics_port: int, allowed_networks: str | None = None) -> Any:
    """`app` for a server that also listens on `metrics_port`, where GET /metrics alone is
    answered (the gateway's DOORWARD_GATEWAY_METRICS_PORT, the secrets door's
    DOORWARD_SECRETS_METRICS_PORT). The app itself must not serve /metrics then."""
    return ByLocalPort(app, metrics_port, metrics_only_app(allowed_networks))


def bind_sockets(app: Any, host: str, ports: list[int]) -> list[socket.socket]:
    """One listening socket per port for `app`, bound as uvicorn binds its own (for
    Server.run/serve with `sockets=`: one server, one event loop, several ports)."""
    import uvicorn

    return [uvicorn.Config(app, host=host, port=port).bind_socket() for port in ports]


class ByLocalPort:
    """ASGI app for one uvicorn server listening on two sockets: requests that arrived on
    `port` (the server's own address, never anything the client says) go to `on_port`, all
    others and the lifespan to `default`."""

    def __init__(self, default: Any, port: int, on_port: Any) -> None:
        self.default = default
        self.port = port
        self.on_port = on_port

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            local = scope.get("server")
            if local is not None and local[1] == self.port:
                await self.on_port(scope, receive, send)
                return
        await self.default(scope, receive, send)


class _CoalescingTransport:
    """A connection's transport whose writes within one turn of the event loop go out as one
    socket send.

    uvicorn writes an answer's status line and headers (`http.response.start`) and then its
    body (`http.response.body`) as two `transport.write` calls, one right after the other, and
    asyncio sends each at once: two system calls, and on loopback two deliveries that each wake
    the reader (the gateway's transport, or the process that called). A send was about a
    quarter of a subgraph's CPU for a small answer on this machine. Here a write is held until
    the next write of the same turn (then both go in one send), or until the end of the turn
    (call_soon), so nothing is delayed past it; close() sends what is held first, abort()
    drops it as asyncio's would, and the protocol sends it when the client's end comes
    (asyncio closes the transport then without asking it). The rest is the transport's own."""

    __slots__ = ("_flush_scheduled", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._flush_scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._held:
            # The second write of a turn: both in one send, at once.
            self._held.append(bytes(data))
            self._flush()
            return
        self._held.append(bytes(data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        if not self._held:
            return
        held = self._held
        self._held = []
        if self._transport.is_closing():
            return  # as asyncio's own write after close: nothing goes out
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held)

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, set_protocol ...
        return getattr(self._transport, name)


def coalescing_protocol(base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (`base`, default its "auto" choice) with each answer's
    headers and body in one socket send (_CoalescingTransport): uvicorn.Config(http=...)."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class CoalescingProtocol(base):  # type: ignore[valid-type,misc]
        _coalescing: _CoalescingTransport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            loop = asyncio.get_running_loop()
            self._coalescing = _CoalescingTransport(transport, loop)  # type: ignore[arg-type]
            super().connection_made(self._coalescing)

        def eof_received(self) -> bool | None:
            # The client shut its side (it sent all it will): uvicorn answers None, and asyncio
            # then closes the transport itself, past our close(). An answer written earlier in
            # this turn goes out first, as it would have without the holding.
            if self._coalescing is not None:
                self._coalescing._flush()
            return super().eof_received()

    CoalescingProtocol.__name__ = f"Coalescing{base.__name__}"
    CoalescingProtocol.__qualname__ = CoalescingProtocol.__name__
    return CoalescingProtocol


class BodyTooLarge(Exception):
    """The request body is longer than the route accepts."""


class ClientGone(Exception):
    """The client disconnected before its request body had arrived."""


async def read_asgi_body(receive: Any, declared: str | None, limit: int) -> bytes:
    """read_body for a pure ASGI handler: `receive` is the ASGI callable, `declared` the
    request's Content-Length header (or None). Same rules: the bytes are counted, not the
    declared length; BodyTooLarge the moment they pass `limit`; ClientGone on a disconnect."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, counted as it arrives and refused (BodyTooLarge) the moment it passes
    `limit` bytes. Content-Length is only a shortcut for an honest client's refusal: a chunked
    body has none, and a declared length may lie, so the bytes themselves are counted. Once the
    answer is sent, uvicorn discards whatever of the body still arrives (never buffered); the
    connection stays open so the client can read the refusal (closing it with unread bytes
    makes the kernel reset it, and the client sees a broken connection instead of a 413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    title: str,
    *,
    readiness: ReadinessCheck | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    edge: bool = False,
    metrics: bool = True,
) -> ServiceApp:
    """`edge=True` for a port clients reach directly (the secrets REST door): see
    doorward_kit.telemetry.instrument_fastapi. `metrics=False`: no GET /metrics on this app
    (the process serves it on a port of its own, doorward_kit.runner ServiceParts.metrics_port)."""
    app = ServiceApp(
        title=title,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **fastapi_options(),
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready = await readiness() if readiness else True
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.exception_handler(DoorwardError)
    async def doorward_error(_: Request, error: DoorwardError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        # Name the fields that were wrong, never echo their values.
        fields = sorted(
            {".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in error.errors()}
        )
        message = (
            "invalid request body: " + ", ".join(f for f in fields if f)
            if fields
            else "invalid request"
        )
        return error_response(DoorwardError(ErrorCode.BAD_USER_INPUT, message))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(DoorwardError(ErrorCode.INTERNAL, "internal error"))

    if metrics:
        add_metrics_route(app)
    app.add_middleware(SecurityHeaders)
    instrument_fastapi(app, edge=edge)
    return app
