"""The web console (web/, built to web/dist) served at `/`, the same origin as /graphql.

Security headers: a strict Content-Security-Policy (scripts and styles only from this origin,
nothing inline; connections only to this origin and the secrets REST door), no framing, no
referrer. `index.html` is revalidated on every load so a new build is picked up; the hashed
assets under /assets/ are immutable. /graphql answers carry tokens (login, reveal grants), so
they are never stored by a browser or a proxy. A missing build answers a page saying how to
build it, and the API keeps working.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from doorward_kit.cors import add_cors, origin_of, parse_origins

DEFAULT_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"
IMMUTABLE = "public, max-age=31536000, immutable"

MISSING = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Doorward console
not built</title></head><body><h1>The Doorward console is not built</h1><p>The API works at
<code>/graphql</code>. To build the console, install Node.js 20 or newer
(<a href="https://nodejs.org/">nodejs.org</a>, or your system's <code>nodejs</code> and
<code>npm</code> packages) and run <code>make up</code> again, or build it by hand:
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>.</p></body></html>"""

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


def content_security_policy(secrets_url: str) -> str:
    connect = f"'self' {origin_of(secrets_url)}"
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        f"connect-src {connect}",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


def _headers(csp: str, cache: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "Cache-Control": cache,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def console_routes(dist: Path, secrets_url: str) -> list[Route]:
    csp = content_security_policy(secrets_url)
    assets = (dist / "assets").resolve()

    async def index(_: Request) -> Response:
        page = dist / "index.html"
        if not page.is_file():
            return HTMLResponse(MISSING, status_code=503, headers=_headers(csp, "no-store"))
        return FileResponse(page, media_type="text/html", headers=_headers(csp, "no-cache"))

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = (assets / name).resolve()
        # Only files inside web/dist/assets: no traversal, no directory listing.
        if assets not in path.parents or not path.is_file():
            return Response("Not found", status_code=404, headers=_headers(csp, "no-store"))
        return FileResponse(path, headers=_headers(csp, IMMUTABLE))

    return [Route("/", index, methods=["GET", "HEAD"]),
            Route("/assets/{name:path}", asset, methods=["GET", "HEAD"])]


class NoStoreGraphQL:
    """Cache-Control: no-store on every /graphql answer (tokens and grants travel there)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != "/graphql":
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"cache-control"]
                headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


def install_console(app: Any, settings: Any) -> list[str]:
    """Console routes, no-store on /graphql and the CORS allow-list, on the gateway app.
    Returns the CORS origins (the gateway's POST /graphql edge answers them the same way)."""
    dist = Path(settings.console_dir) if settings.console_dir else DEFAULT_DIST
    for route in console_routes(dist, settings.stack.secrets_base_url):
        app.router.routes.append(route)
    app.add_middleware(NoStoreGraphQL)
    origins = parse_origins(settings.cors_origins, [settings.stack.console_origin])
    add_cors(app, origins, ["GET", "POST"])
    return origins
