"""The gateway's HTTP server: POST/GET /graphql, /healthz, /readyz.

Authentication errors answer HTTP 401 with a GraphQL body whose error has
`extensions.code = UNAUTHENTICATED` (Apollo Server's documented pattern: a GraphQLError with
`extensions.http.status = 401`). Parse, validation and variable errors answer 400 like Apollo
Server 4; rate limiting answers 429 with code RATE_LIMITED; execution errors answer 200.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
)
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from doorward_kit.gateway_signature import CLIENT_ADDRESS_HEADER, GatewaySigner, SigningTransport
from doorward_kit.headers import NON_HTML_CSP, SECURITY_HEADERS, SecurityHeaders
from doorward_kit.http import (
    BodyTooLarge,
    ClientGone,
    add_metrics_route,
    fastapi_options,
    read_asgi_body,
)
from doorward_kit.metrics import GATEWAY_REQUEST_SECONDS
from doorward_kit.telemetry import client_trace_links
from gateway.apq import PersistedQueries, check_hash, requested_hash
from gateway.client_address import client_address
from gateway.composition import CompositionError, Supergraph, compose
from gateway.console import install_console
from gateway.errors import RequestError
from gateway.executor import Executor, VariablesInvalid
from gateway.limits import LimitChecker, Limits, RateLimiter, TrustedDocuments, parse_document
from gateway.planner import (
    OperationResolutionError,
    PlanningError,
    QueryPlanner,
    ValidationFailed,
)
from gateway.replica_count import ReplicaFollower, dns_peers
from gateway.settings import GatewaySettings
from gateway.transport import SubgraphTransport
from gateway.upstreams import HealthChecker, Replica, Upstream

log = logging.getLogger("doorward.gateway")
_tracer = trace.get_tracer("doorward.gateway")

Authenticator = Callable[[str | None], Awaitable[object]]
PUBLIC_MUTATIONS = frozenset({"login", "refresh"})
SDL_QUERY = orjson.dumps({"query": "{ _service { sdl } }"})


class GatewayStartupError(RuntimeError):
    """The gateway cannot start: names the subgraphs that are down or the composition errors."""


def _errors(message: str, code: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


async def fetch_sdls(client: httpx.AsyncClient, urls: Mapping[str, str], wait: float
                     ) -> dict[str, tuple[str, str]]:
    """Each subgraph's SDL, retrying until `timeout`; then one error naming every one still down."""
    deadline = time.monotonic() + wait
    found: dict[str, tuple[str, str]] = {}
    problems: dict[str, str] = {}
    delay = 0.1
    while True:
        for name, url in urls.items():
            if name in found:
                continue
            try:
                resp = await client.post(url, content=SDL_QUERY,
                                         headers={"content-type": "application/json"}, timeout=5)
                sdl = resp.json()["data"]["_service"]["sdl"]
                found[name] = (url, sdl)
                problems.pop(name, None)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                problems[name] = f"{url} ({type(exc).__name__})"
        if len(found) == len(urls):
            return {name: found[name] for name in urls}
        if time.monotonic() + delay > deadline:
            down = ", ".join(f"{n} at {p}" for n, p in problems.items())
            raise GatewayStartupError(f"subgraphs unreachable after {wait:.0f}s: {down}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def is_public_operation(document: DocumentNode, operation_name: str | None) -> bool:
    """True when the operation only calls login/refresh: those run without a token."""
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        ops = [o for o in ops if o.name and o.name.value == operation_name]
    if len(ops) != 1 or ops[0].operation is not OperationType.MUTATION:
        return False
    sels = ops[0].selection_set.selections
    return bool(sels) and all(isinstance(s, FieldNode) and s.name.value in PUBLIC_MUTATIONS
                              for s in sels)


def _principal_key(principal: object) -> str | None:
    for attr in ("user_id", "id", "sub"):
        v = getattr(principal, attr, None)
        if v:
            return f"user:{v}"
    return None


class Gateway:
    def __init__(self, settings: GatewaySettings, supergraph: Supergraph,
                 client: httpx.AsyncClient, authenticator: Authenticator | None,
                 transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
                 upstreams: Mapping[str, Upstream] | None = None) -> None:
        self.settings = settings
        self.supergraph = supergraph
        urls = dict(supergraph.urls)
        urls.update({k: v[0] for k, v in settings.subgraph_replicas().items()
                     if k in urls and v and settings.subgraphs})
        self.limits = Limits(settings.max_depth, settings.max_aliases, settings.max_fields,
                             settings.max_cost, settings.default_list_size,
                             settings.introspection_enabled, settings.max_directives,
                             settings.max_tokens, settings.max_document_chars)
        self.checker = LimitChecker(supergraph.api_schema, self.limits)
        # Limits are checked here, before the planner validates or plans anything.
        self.planner = QueryPlanner(supergraph, settings.plan_cache_size,
                                    enabled_labels=settings.override_labels)
        self.executor = Executor(urls, supergraph.api_schema, client, settings.subgraph_timeout,
                                 transports, upstreams=upstreams)
        self.authenticator = authenticator if settings.auth_enabled else None
        self.trusted = (TrustedDocuments.load(settings.trusted_documents)
                        if settings.trusted_documents else None)
        self.persisted = PersistedQueries(settings.persisted_queries_max_entries,
                                          settings.persisted_queries_max_chars)
        self.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst,
                                        replicas=settings.replicas)

    async def handle(self, payload: Any, headers: Mapping[str, str], client: str,
                     allow_mutation: bool = True, batch_size: int = 1
                     ) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        try:
            return await self._answer(payload, headers, client, allow_mutation, batch_size)
        finally:
            GATEWAY_REQUEST_SECONDS.observe(
                time.perf_counter() - started, operation=OPERATION_LABELS.label(payload)
            )

    async def _answer(self, payload: Any, headers: Mapping[str, str], client: str,
                      allow_mutation: bool, batch_size: int) -> tuple[int, dict[str, Any]]:
        try:
            return 200, await self._handle(payload, headers, client, allow_mutation, batch_size)
        except RequestError as exc:
            return exc.status, _errors(str(exc), exc.code)
        except ValidationFailed as exc:
            return 400, {"errors": [_format(e, "GRAPHQL_VALIDATION_FAILED") for e in exc.errors]}
        except VariablesInvalid as exc:
            return 400, {"errors": [_format(e, "BAD_USER_INPUT") for e in exc.errors]}
        except OperationResolutionError as exc:
            return 400, {"errors": [_format(exc, "INVALID_GRAPHQL")]}
        except GraphQLError as exc:
            return 400, {"errors": [_format(exc, "GRAPHQL_VALIDATION_FAILED")]}
        except PlanningError:
            log.exception("query planning failed")
            return 200, _errors("Internal server error", "INTERNAL_SERVER_ERROR")
        except Exception:
            log.exception("gateway request failed")  # request data stays out of the log
            return 500, _errors("Internal server error", "INTERNAL_SERVER_ERROR")

    def _token_budget(self, anonymous: bool, batch_size: int) -> int:
        """Lexical tokens one document may hold. Parsing and validating cost time in proportion
        to tokens, so the budget bounds how long a request holds the event loop: strangers
        (who may only log in) get a small one, and a batch shares one budget."""
        budget = self.settings.anonymous_max_tokens if anonymous else self.limits.max_tokens
        return max(1, budget // max(1, batch_size))

    async def _handle(self, payload: Any, headers: Mapping[str, str], client: str,
                      allow_mutation: bool, batch_size: int = 1) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise RequestError(400, "The request body must be a JSON object.", "BAD_REQUEST")
        query = payload.get("query")
        operation_name = payload.get("operationName") or None
        variables = payload.get("variables") or {}
        if not isinstance(variables, dict):
            raise RequestError(400, "`variables` must be a JSON object.", "BAD_REQUEST")
        if query is not None and not isinstance(query, str):
            raise RequestError(400, "`query` must be a string.", "BAD_REQUEST")
        sha = requested_hash(payload)
        learn: str | None = None  # a hash remembered once its document passed everything
        if self.trusted is not None:
            query = self.trusted.resolve(query or None, sha)
            if query is None:
                raise RequestError(400, "This operation is not on the trusted documents list.",
                                   "PERSISTED_QUERY_NOT_FOUND")
        elif query:
            if sha is not None:
                check_hash(query, sha)
                learn = sha
        elif sha is not None:
            query = self.persisted.lookup(sha)
        else:
            raise RequestError(400, "The request has no `query`.", "BAD_REQUEST")

        principal: object | None = None
        cached = self.planner.peek(query, operation_name)
        document: DocumentNode | None = None
        if self.authenticator is not None:
            auth = headers.get("authorization")
            try:
                principal = await self.authenticator(auth)
            except Exception as exc:
                if cached is not None:
                    public = cached.checks.get("public", False)
                else:
                    try:
                        document = _parse(query, self.limits, self._token_budget(True, batch_size))
                        public = is_public_operation(document, operation_name)
                    except RequestError:
                        if auth is None:
                            raise  # a stranger's document: its parse error (or the budget)
                        # A refused token (say, expired) matters more than a document too long
                        # for a stranger: 401 lets the client refresh and send it again.
                        public = False
                if not public:
                    if getattr(getattr(exc, "code", None), "value", None) == "UNAVAILABLE":
                        # identity cannot be asked: not the caller's fault, and not a 401.
                        raise RequestError(
                            503, "Sign-in cannot be checked right now.", "UNAVAILABLE"
                        ) from None
                    raise RequestError(401, _auth_message(exc), "UNAUTHENTICATED") from None
        key = _principal_key(principal) if principal is not None else None
        if not self.rate_limiter.allow(key or f"addr:{client}"):
            raise RequestError(429, "Too many requests: slow down.", "RATE_LIMITED")
        if cached is None:
            if document is None:
                anonymous = self.authenticator is not None and principal is None
                document = _parse(query, self.limits, self._token_budget(anonymous, batch_size))
            # One pass over the document, stopping at the first limit it is over: nothing
            # unbounded (validation, planning) runs on a document that has not passed it.
            variable_cost = self.checker.check(document)
            cached = self.planner.get(query, operation_name, document)
            cached.checks["public"] = is_public_operation(document, operation_name)
            cached.checks["variable_cost"] = variable_cost
        if cached.checks.get("variable_cost"):
            # Over the cost limit if a `first: $n` were at its cap: count with this request's n.
            self.checker.check_cost(cached.document, operation_name, variables)
        if not allow_mutation and cached.plan.operation_kind == "mutation":
            raise RequestError(405, "Mutations are not allowed over GET.", "BAD_REQUEST")
        if learn is not None:
            self.persisted.remember(learn, query)
        plan = self.planner.plan_for(cached, principal)
        if principal is not None or self.authenticator is None:
            # Only a signed-in caller's operation (it resolved and planned) gets a metric label
            # of its own: strangers cannot fill the bounded set first (OperationLabels).
            OPERATION_LABELS.admit(operation_name)
        return await self.executor.execute(plan, variables, _forwarded(headers, client))


class OperationLabels:
    """The `operation` label of the gateway's request duration: the client's operationName, but
    bounded. Clients choose names, so a stranger could otherwise mint a new time series per
    request (memory of every scraper), or fill the `limit` first and pin every real operation
    to "other": a name becomes a label only once admitted, which the gateway does for a signed-in
    caller's operation that resolved and planned (or with authentication off); until then, and
    beyond the first `limit` names, it counts as "other". An unnamed operation is "anonymous",
    a name that is not a plain identifier (GraphQL names are) "invalid"."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    @staticmethod
    def _name(payload: Any) -> str | None:
        name = payload.get("operationName") if isinstance(payload, dict) else None
        return name or None

    def admit(self, name: str | None) -> None:
        """Give `name` a label of its own (if it is a name and there is room)."""
        if (name and len(self._seen) < self.limit and len(name) <= 48
                and _GRAPHQL_NAME.match(name)):
            self._seen.add(name)

    def label(self, payload: Any) -> str:
        name = self._name(payload)
        if not name:
            return "anonymous"
        if not isinstance(name, str) or len(name) > 48 or not _GRAPHQL_NAME.match(name):
            return "invalid"
        return name if name in self._seen else "other"


OPERATION_LABELS = OperationLabels()
_GRAPHQL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def _forwarded(headers: Mapping[str, str], client: str) -> dict[str, str]:
    """What subgraphs get from the client's request: its token and the address the gateway
    determined (signed on the way out), never a client's own X-Doorward-Client-Address."""
    out = {CLIENT_ADDRESS_HEADER: client}
    auth = headers.get("authorization")
    if auth is not None:
        out["authorization"] = auth
    return out


def subgraph_transport(inner: httpx.AsyncBaseTransport, signer: GatewaySigner | None
                       ) -> httpx.AsyncBaseTransport:
    # Subgraphs answer only requests the gateway signed (doorward_kit/gateway_signature.py).
    return inner if signer is None else SigningTransport(inner, signer)


def load_signer(settings: GatewaySettings) -> GatewaySigner | None:
    if settings.signing_key_file is None:
        log.warning("no DOORWARD_GATEWAY_SIGNING_KEY_FILE: subgraph requests go unsigned "
                    "(Doorward's subgraphs refuse them unless they allow unsigned GraphQL)")
        return None
    return GatewaySigner.from_file(settings.signing_key_file)


def _parse(query: str, limits: Limits, max_tokens: int) -> DocumentNode:
    try:
        return parse_document(query, limits, max_tokens)
    except GraphQLError as exc:
        raise RequestError(400, exc.message, "GRAPHQL_PARSE_FAILED") from None


def _auth_message(exc: Exception) -> str:
    # DoorwardError messages are written to be safe to show; anything else stays generic.
    code = getattr(getattr(exc, "code", None), "value", None)
    if code == "UNAUTHENTICATED" and str(exc):
        return str(getattr(exc, "message", None) or exc)
    return "Authentication required: send a valid access token."


def _format(err: GraphQLError, code: str) -> dict[str, Any]:
    out = err.formatted
    ext = dict(out.get("extensions") or {})
    ext.setdefault("code", code)
    out["extensions"] = ext
    return dict(out)


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


GRAPHIQL = """<!doctype html><html><head><title>Doorward GraphiQL</title>
<link rel="stylesheet" href="https://unpkg.com/graphiql@3/graphiql.min.css"/></head>
<body style="margin:0"><div id="g" style="height:100vh"></div>
<script src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
<script src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
<script src="https://unpkg.com/graphiql@3/graphiql.min.js"></script>
<script>ReactDOM.createRoot(document.getElementById('g')).render(React.createElement(
GraphiQL,{fetcher:GraphiQL.createFetcher({url:location.pathname})}));</script></body></html>"""


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
PostHandler = Callable[[Scope, Receive, Headers], Awaitable[tuple[int, bytes]]]

# What every POST /graphql answer carries besides its own type and length, exactly what the
# middleware stack gives the gateway's other answers: the kit's security headers
# (doorward_kit/headers.py: a JSON answer gets the non-HTML CSP), no-store (tokens and grants
# travel here, gateway/console.py) and CORS's `Vary: Origin`.
_EDGE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"application/json"),
    *SECURITY_HEADERS,
    NON_HTML_CSP,
    (b"vary", b"Origin"),
]


class GraphQLEdge:
    """POST /graphql in one pure ASGI layer. Every other request goes through FastAPI and its
    middleware (CORS, no-store, security headers, error pages): seven layers, each a
    coroutine, a wrapped `send` and header lists rebuilt per answer, for every GraphQL request.
    This layer answers the one hot route with the same headers those layers would add (the
    tests compare the two), the body counted against its limit as it arrives, and CORS as
    Starlette's middleware answers a simple request: the origin echoed only when it is listed
    (preflights, OPTIONS, still go through the middleware)."""

    def __init__(self, handler: PostHandler, cors_origins: list[str]) -> None:
        self.handler = handler
        self.cors_origins = frozenset(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            status, body = await self.handler(scope, receive, headers)
        except ClientGone:
            return  # nobody to answer
        except Exception:
            log.exception("gateway request failed")  # request data stays out of the log
            status, body = 500, orjson.dumps(
                _errors("Internal server error", "INTERNAL_SERVER_ERROR"))
        out = [*_EDGE_HEADERS, (b"content-length", str(len(body)).encode())]
        origin = headers.get("origin")
        if origin is not None and origin in self.cors_origins:
            out.append((b"access-control-allow-origin", origin.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with POST /graphql answered by its GraphQLEdge before the
    middleware stack (everything else, and the lifespan, as FastAPI does)."""

    graphql_edge: GraphQLEdge | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        edge = self.graphql_edge
        if (edge is not None and scope["type"] == "http" and scope["path"] == "/graphql"
                and scope["method"] == "POST"):
            await edge(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _replica_urls(settings: GatewaySettings, supergraph: Supergraph) -> dict[str, list[str]]:
    """Every subgraph's replica URLs: DOORWARD_GATEWAY_SUBGRAPHS (comma-separated lists) wins;
    a subgraph composed from the stack's first address (DOORWARD_<SVC>_HTTP_URL) gets the
    stack's other replicas too; any other URL (a supergraph file's, a test's) stands alone."""
    found = {name: [url] for name, url in supergraph.urls.items()}
    for name, urls in settings.subgraph_replicas().items():
        if name in found and urls and (settings.subgraphs or found[name][0] == urls[0]):
            found[name] = urls
    return found


def create_app(settings: GatewaySettings | None = None, authenticator: Authenticator | None = None,
               supergraph_sdl: str | None = None) -> FastAPI:
    """The gateway app. Without `supergraph_sdl`, composes the configured subgraphs at start."""
    settings = settings or GatewaySettings()
    if settings.supergraph_file and supergraph_sdl is None:
        with open(settings.supergraph_file, encoding="utf-8") as fh:
            supergraph_sdl = fh.read()
    if settings.auth_enabled and authenticator is None:
        raise ValueError("authentication is enabled but no authenticator was given "
                         "(pass one, or disable auth with --no-auth)")

    signer = load_signer(settings)
    trusted_proxies = settings.trusted_networks

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if supergraph_sdl is not None:
            supergraph = Supergraph.from_sdl(supergraph_sdl)
        else:
            sdl_transport = subgraph_transport(httpx.AsyncHTTPTransport(), signer)
            async with httpx.AsyncClient(transport=sdl_transport) as bootstrap:
                sdls = await fetch_sdls(bootstrap, settings.subgraph_urls(),
                                        settings.startup_timeout)
            try:
                supergraph = Supergraph.from_sdl(compose(sdls))
            except CompositionError as exc:
                raise GatewayStartupError(str(exc)) from exc
        replicas = _replica_urls(settings, supergraph)
        urls = {name: found[0] for name, found in replicas.items()}
        limits = httpx.Limits(max_connections=settings.max_connections,
                              max_keepalive_connections=settings.max_connections)
        # One client; one connection pool per subgraph origin, mounted on it.
        by_origin: dict[str, httpx.AsyncBaseTransport] = {}

        def pool(url: str) -> httpx.AsyncBaseTransport:
            u = httpx.URL(url)
            origin = f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")
            if origin not in by_origin:
                if u.scheme == "http":
                    # The lean keep-alive client (gateway/transport.py), signing as before.
                    by_origin[origin] = SubgraphTransport(
                        origin, signer=signer, max_connections=settings.max_connections)
                else:
                    by_origin[origin] = subgraph_transport(
                        httpx.AsyncHTTPTransport(limits=limits), signer)
            return by_origin[origin]

        transports = {name: pool(url) for name, url in urls.items()}
        upstreams = {name: Upstream(name, [Replica(u, pool(u)) for u in found])
                     for name, found in replicas.items() if len(found) > 1}
        health = HealthChecker(upstreams)
        async with httpx.AsyncClient(mounts=dict(by_origin.items()),
                                     timeout=settings.subgraph_timeout) as client:
            app.state.gateway = Gateway(settings, supergraph, client, authenticator, transports,
                                        upstreams)
            health.start()
            # The rate limit's share follows the live number of gateways (autoscaling).
            peers = (ReplicaFollower(app.state.gateway.rate_limiter, dns_peers(settings.peers_dns))
                     if settings.peers_dns else None)
            if peers is not None:
                await peers.refresh()
                peers.start()
            try:
                yield
            finally:
                if peers is not None:
                    await peers.stop()
                await health.stop()

    app = GatewayApp(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                     **fastapi_options())
    app.state.gateway = None
    app.add_middleware(SecurityHeaders)

    async def graphql_post(scope: Scope, receive: Receive, headers: Headers) -> tuple[int, bytes]:
        gw: Gateway | None = app.state.gateway
        if gw is None:
            return 503, orjson.dumps(_errors("The gateway is starting.", "UNAVAILABLE"))
        try:
            body = await read_asgi_body(receive, headers.get("content-length"),
                                        settings.max_body_bytes)
        except BodyTooLarge:
            return 413, orjson.dumps(_errors("The request body is too large.",
                                             "PAYLOAD_TOO_LARGE"))
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, orjson.dumps(_errors("The request body is not valid JSON.",
                                             "BAD_REQUEST"))
        peer = scope.get("client")
        status, answer = await _dispatch(gw, headers, peer[0] if peer else None, payload,
                                         allow_mutation=True)
        return status, orjson.dumps(answer)

    async def graphql_get(request: Request) -> Response:
        gw: Gateway | None = request.app.state.gateway
        params = request.query_params
        if "query" not in params and "extensions" not in params:
            if settings.graphiql_enabled and "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(GRAPHIQL)
            return _json(400, _errors("The request has no `query`.", "BAD_REQUEST"))
        if gw is None:
            return _json(503, _errors("The gateway is starting.", "UNAVAILABLE"))
        try:
            payload: dict[str, Any] = {"query": params.get("query"),
                                       "operationName": params.get("operationName")}
            for k in ("variables", "extensions"):
                if params.get(k):
                    payload[k] = orjson.loads(params[k])
        except orjson.JSONDecodeError:
            return _json(400, _errors("`variables`/`extensions` must be JSON.", "BAD_REQUEST"))
        status, answer = await _dispatch(gw, request.headers,
                                         request.client.host if request.client else None,
                                         payload, allow_mutation=False)
        return _json(status, answer)

    async def _dispatch(gw: Gateway, headers: Headers, peer: str | None, payload: Any,
                        allow_mutation: bool) -> tuple[int, Any]:
        # The real client address (trusted proxies' X-Forwarded-For only): rate limits are
        # per address, and subgraphs (identity's login throttle, audit's sourceIp) get it signed.
        client = client_address(peer, headers.getlist("x-forwarded-for"),
                                trusted_proxies) or "unknown"
        # The edge starts the trace: a client's traceparent is only a link, so a client cannot
        # choose the traceId of the audit events its request causes. Subgraph fetches are
        # children of this span (internal hops propagate as usual).
        span = _tracer.start_span("POST /graphql", context=Context(), kind=trace.SpanKind.SERVER,
                                  links=client_trace_links(headers))
        span_token = otel_context.attach(trace.set_span_in_context(span, Context()))
        try:
            if isinstance(payload, list):
                if not payload or len(payload) > settings.max_batch:
                    return 400, _errors(
                        f"A batch holds 1 to {settings.max_batch} operations.", "BAD_REQUEST")
                results = await asyncio.gather(*(gw.handle(p, headers, client, allow_mutation,
                                                           len(payload))
                                                 for p in payload))
                return 200, [body for _, body in results]
            status, body = await gw.handle(payload, headers, client, allow_mutation)
            span.set_attribute("http.status_code", status)
            return status, body
        finally:
            span.end()
            otel_context.detach(span_token)

    app.router.add_route("/graphql", graphql_get, methods=["GET"])

    if settings.metrics_port is None:
        add_metrics_route(app, settings.stack.metrics_allowed_networks)
    origins = install_console(app, settings)
    app.graphql_edge = GraphQLEdge(graphql_post, origins)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        ready = request.app.state.gateway is not None
        return JSONResponse({"status": "ready" if ready else "starting"},
                            status_code=200 if ready else 503)

    return app
