"""`doorward gateway compose|serve` (typer sub-app `gateway_app`) and the functions behind it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer

from gateway.composition import compose as compose_supergraph
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    import socket

    import uvicorn

gateway_app = typer.Typer(no_args_is_help=False, add_completion=False,
                          help="The federation gateway.")


def compose(subgraphs: dict[str, str] | None = None, startup_timeout: float = 10.0,
            settings: GatewaySettings | None = None) -> str:
    """Supergraph SDL of the running subgraphs ({name: url}; default: the Doorward ones),
    asked with the gateway's signature when it has a key (Doorward's subgraphs require it)."""
    from gateway.server import fetch_sdls, load_signer, subgraph_transport

    settings = settings or GatewaySettings()
    urls = subgraphs or settings.subgraph_urls()
    signer = load_signer(settings)

    async def run() -> str:
        transport = subgraph_transport(httpx.AsyncHTTPTransport(), signer)
        async with httpx.AsyncClient(transport=transport) as client:
            sdls = await fetch_sdls(client, urls, startup_timeout)
        return compose_supergraph(sdls)

    return asyncio.run(run())


def serve(supergraph_file: str | None = None, port: int | None = None,
          auth_enabled: bool = True) -> None:
    """Run the gateway in the foreground (uvicorn)."""
    import uvicorn

    from doorward_kit.gc_tuning import settle_heap
    from doorward_kit.http import coalescing_protocol
    from doorward_kit.logging import setup_logging
    from doorward_kit.telemetry import setup_telemetry
    from gateway.auth import doorward_authenticator
    from gateway.composition import CompositionError
    from gateway.server import GatewayStartupError, create_app

    setup_logging("gateway")
    setup_telemetry("gateway", instrument_libraries=False)

    overrides: dict[str, object] = {"auth_enabled": auth_enabled}
    if supergraph_file is not None:
        overrides["supergraph_file"] = supergraph_file
    if port is not None:
        overrides["port"] = port
    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    authenticator = doorward_authenticator(settings) if auth_enabled else None
    sdl = None
    if settings.supergraph_file is None:
        # Compose before listening, so a down subgraph is one clear line, not a traceback.
        try:
            sdl = compose(settings.subgraph_urls(), settings.startup_timeout, settings)
        except (GatewayStartupError, CompositionError) as exc:
            typer.echo(f"gateway: cannot start: {exc}", err=True)
            raise typer.Exit(1) from None
    app = create_app(settings, authenticator, sdl)
    settle_heap()
    if settings.metrics_port is not None or settings.proxy_protocol_port is not None:
        serve_on_edge_ports(app, settings)
        return
    # proxy_headers=False: uvicorn would otherwise replace the peer by X-Forwarded-For from
    # loopback peers; the gateway reads that header itself, from trusted proxies only.
    # http: each answer's headers and body in one socket send (doorward_kit.http).
    uvicorn.run(app, host=settings.stack.host, port=settings.listen_port, log_level="warning",
                access_log=False, proxy_headers=False, http=coalescing_protocol())


def serve_on_edge_ports(app: Any, settings: GatewaySettings) -> None:
    """One server on several sockets: the API on `listen_port`; GET /metrics alone on
    `metrics_port` (deploy/k8s opens the API to the ingress controller only, metrics to the
    monitoring namespace only); the API behind a PROXY-protocol balancer on
    `proxy_protocol_port` (gateway/proxy_protocol.py)."""
    server, sockets = edge_server(app, settings)
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def edge_server(
    app: Any, settings: GatewaySettings
) -> tuple[uvicorn.Server, list[socket.socket]]:
    """The server of serve_on_edge_ports and its bound sockets."""
    import uvicorn

    from doorward_kit.http import bind_sockets, coalescing_protocol, with_metrics_port
    from gateway.client_address import parse_trusted_proxies
    from gateway.proxy_protocol import with_proxy_protocol

    ports = [settings.listen_port, settings.metrics_port, settings.proxy_protocol_port]
    sockets = bind_sockets(app, settings.stack.host, [port for port in ports if port is not None])
    routed: Any = app
    if settings.metrics_port is not None:
        routed = with_metrics_port(app, settings.metrics_port,
                                   settings.stack.metrics_allowed_networks)
    http: Any = None
    if settings.proxy_protocol_port is not None:
        probe = uvicorn.Config(app)
        probe.load()
        http = with_proxy_protocol(probe.http_protocol_class, settings.proxy_protocol_port,
                                   parse_trusted_proxies(settings.proxy_protocol_from))
    # proxy_headers=False as in serve(): the peer is never replaced by a header.
    config = uvicorn.Config(routed, http=coalescing_protocol(http), log_level="warning",
                            access_log=False, proxy_headers=False)
    return uvicorn.Server(config), sockets


@gateway_app.command("compose")
def compose_command(
    subgraph: list[str] = typer.Option(
        [], "--subgraph", help="name=url (repeatable); default: the Doorward subgraphs"),
    out: Path | None = typer.Option(None, help="write the SDL here instead of stdout"),
) -> None:
    """Print the supergraph SDL composed from the running subgraphs."""
    urls = dict(s.split("=", 1) for s in subgraph) or None
    sdl = compose(urls)
    if out is not None:
        out.write_text(sdl)
    else:
        typer.echo(sdl, nl=False)


@gateway_app.command("serve")
def serve_command(
    supergraph: Path | None = typer.Option(None, "--supergraph", exists=True, dir_okay=False,
                                           help="supergraph SDL file (default: compose at start)"),
    port: int | None = typer.Option(None, help="listen port (default DOORWARD_GATEWAY_PORT)"),
    auth: bool = typer.Option(True, "--auth/--no-auth", help="require access tokens"),
) -> None:
    """Serve the federated graph."""
    serve(str(supergraph) if supergraph else None, port, auth)


def plan_text(supergraph_sdl: str, query: str, operation_name: str | None = None) -> str:
    """The typed query plan of one operation, printed."""
    from graphql import parse

    from gateway.planner import QueryPlanner
    from gateway.supergraph import Supergraph

    planner = QueryPlanner(Supergraph.from_sdl(supergraph_sdl))
    return planner.get(query, operation_name, parse(query)).plan.print()


@gateway_app.command("plan")
def plan_command(
    supergraph: Path = typer.Option(..., "--supergraph", exists=True, dir_okay=False,
                                    help="supergraph SDL file"),
    query: str = typer.Option(..., "--query", help="the operation, or @FILE to read it"),
    operation_name: str | None = typer.Option(None, "--operation-name"),
) -> None:
    """Print the query plan of an operation against a supergraph."""
    from gateway.planner import PlanningError, ValidationFailed

    text = Path(query[1:]).read_text() if query.startswith("@") else query
    try:
        typer.echo(plan_text(supergraph.read_text(), text, operation_name))
    except (ValidationFailed, PlanningError) as exc:
        typer.echo(f"gateway plan: {exc}", err=True)
        raise typer.Exit(1) from None
