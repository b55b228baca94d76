"""A subgraph's POST /graphql in one pure ASGI layer (what gateway/server.py GraphQLEdge does for
the gateway).

Through FastAPI a subgraph request passed about a dozen layers before strawberry ran: uvicorn's
ASGI adapter, the OpenTelemetry middleware (which matched every route of the app again to name
its span), two error middlewares, FastAPI's body limit and exit stacks, the kit's security
headers, Starlette's router, FastAPI's dependency injection for the context, and strawberry's
HTTP view; each a coroutine, several a wrapped `send`. For identity's `me` that was most of the
process's CPU outside its two SQL statements.

This layer does, in the same order, what those layers did for a POST:
  1. the server span: the same name ("POST /graphql"), kind, attributes and instrumentation
     scope as the FastAPI instrumentation's, the caller's `traceparent` continued (internal
     hop), the HTTP status on it, an unexpected exception recorded;
  2. the gate (GatewayGate.check, the very code the FastAPI route runs): the signature header
     before the body, the body counted against its limit as it arrives (413), the signature,
     the nonce claimed in the replicas' ledger (401 refused, 503 when the ledger cannot tell);
  3. strawberry's HTTP rules for a POST, with its answers for a wrong content type, a body that
     is not JSON, a batch, a `query`, `variables` or `extensions` of the wrong type, a missing
     query or an operation type not allowed (400, plain text, the same words);
  4. `schema.execute` with the same RequestContext (the router's own factory);
  5. the answer encoded by orjson, with the headers the kit's SecurityHeaders middleware adds.
Anything unexpected is logged and answered 500 with the body FastAPI's handler gives (a client
gone before its body arrived gets no answer and no error in the log).
tests/unit/kit/test_subgraph_edge.py sends the same requests through this layer and through
FastAPI's stack and compares status, headers, body and span.

GET (GraphiQL in development), health, metrics and every other route still go through FastAPI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation._semconv import (
    _get_schema_url,
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
)
from opentelemetry.instrumentation.asgi import collect_request_attributes, set_status_code
from opentelemetry.instrumentation.fastapi.version import __version__ as fastapi_instr_version
from opentelemetry.semconv.trace import SpanAttributes
from opentelemetry.trace import Status, StatusCode
from starlette.requests import ClientDisconnect, Request
from strawberry.exceptions import MissingQueryError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import process_result
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.gateway_signature import SignatureRefused
from doorward_kit.graphql import (
    ContextFactory,
    GatewayGate,
    SubgraphRouter,
    body_too_large,
    encode_answer,
    refusal_body,
)
from doorward_kit.headers import NON_HTML_CSP, SECURITY_HEADERS
from doorward_kit.http import BodyTooLarge, ServiceApp

log = logging.getLogger("doorward_kit.graphql")
_http_log = logging.getLogger("doorward_kit.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# The FastAPI instrumentation's scope: the span is the one it made, so a backend's queries by
# instrumentation library keep finding it.
_INSTRUMENTATION = "opentelemetry.instrumentation.fastapi"
SPAN_NAME = "POST /graphql"

# Exactly what the middleware stack gave these answers: the kit's security headers, and the
# non-HTML CSP (doorward_kit/headers.py). Content type and length are per answer.
_HEADERS = [*SECURITY_HEADERS, NON_HTML_CSP]
_JSON = b"application/json"
_JSON_TYPE = "application/json"
_TEXT = b"text/plain; charset=utf-8"
# The body of FastAPI's handler for anything unexpected (doorward_kit.http.create_app).
_INTERNAL = orjson.dumps(DoorwardError(ErrorCode.INTERNAL, "internal error").to_json())
# Distinct request attribute sets remembered (one per kept-alive connection of the gateway).
_ATTRIBUTE_CACHE_SIZE = 1024
# The most bytes of path, query, Host and User-Agent a remembered request may have.
_ATTRIBUTE_KEY_BYTES = 1024
# strawberry's allowed operation types for a POST (OperationType.from_http("POST")).
_POST_OPERATIONS = OperationType.from_http("POST")


class _Answer:
    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: bytes, content_type: bytes = _JSON) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


def _text(reason: str) -> _Answer:
    """One of strawberry's refusals: 400, plain text."""
    return _Answer(400, reason.encode(), _TEXT)


def _refused(error: DoorwardError) -> _Answer:
    return _Answer(error.http_status, orjson.dumps(refusal_body(error)))


def _parse_json(body: bytes) -> Any:
    """orjson, and the standard library's reading for what orjson refuses (NaN, Infinity,
    other encodings than UTF-8...), so every body is read exactly as strawberry read it."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


_FIELDS: list[tuple[object, frozenset[bytes]]] = []


def _trace_carrier(scope: Scope) -> dict[str, str]:
    """The request headers the installed propagator reads (traceparent, tracestate, baggage
    by default), first occurrence of each, decoded as Starlette's Headers decodes them: what
    `propagate.extract(request.headers)` read, without scanning and decoding every header
    once per field it asks for."""
    textmap = propagate.get_global_textmap()
    if not _FIELDS or _FIELDS[0][0] is not textmap:  # worked out again if it is replaced
        _FIELDS[:] = [(textmap, frozenset(f.lower().encode("latin-1") for f in textmap.fields))]
    fields = _FIELDS[0][1]
    carrier: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        if name in fields:
            carrier.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return carrier


class SubgraphEdge:
    """POST /graphql of one subgraph router (see the module's docstring)."""

    def __init__(
        self,
        router: SubgraphRouter,
        *,
        path: str = "/graphql",
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if router.schema.config.batching_config is not None:
            raise ValueError("the subgraph edge answers single operations only (no batching)")
        self.schema = router.schema
        self.gate: GatewayGate = router.gate
        self.new_context: ContextFactory = router.new_context
        self.path = path
        # The semantic conventions' mode (OTEL_SEMCONV_STABILITY_OPT_IN) as the instrumentation
        # reads it: the same attribute names.
        stability = _OpenTelemetrySemanticConventionStability
        stability._initialize()
        self._mode = stability._get_opentelemetry_stability_opt_in_mode(
            _OpenTelemetryStabilitySignalType.HTTP
        )
        self._tracer = trace.get_tracer(
            _INSTRUMENTATION,
            fastapi_instr_version,
            tracer_provider,
            schema_url=_get_schema_url(self._mode),
        )
        self._attributes: dict[tuple[Any, ...], dict[str, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        attributes = self._request_attributes(scope)
        # An internal hop: the gateway's trace is continued (its traceparent), as the
        # instrumentation did (doorward_kit.telemetry.instrument_fastapi, edge=False).
        parent = propagate.extract(_trace_carrier(scope))
        span = self._tracer.start_span(
            SPAN_NAME, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            try:
                answer = await self._answer(request)
            except ClientDisconnect:
                return  # gone before its body had arrived: nobody to answer
            except Exception as exc:
                # What FastAPI's stack did: the instrumentation's exception handler put it on
                # the span, the app's handler logged it and answered 500.
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                _http_log.exception("unhandled error")
                answer = _Answer(500, _INTERNAL)
            set_status_code(span, answer.status, None, self._mode)
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [
                        (b"content-length", str(len(answer.body)).encode()),
                        (b"content-type", answer.content_type),
                        *_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": answer.body})
        finally:
            otel_context.detach(token)
            span.end()

    def _request_attributes(self, scope: Scope) -> dict[str, Any]:
        """The server span's request attributes, as the instrumentation collects them: worked
        out once per distinct input and remembered (at most _ATTRIBUTE_CACHE_SIZE). They depend
        only on these parts of the scope (and the mode): the gateway sends the same ones on
        every request of a kept-alive connection, and collecting them decoded and compared
        every header three times (about 40 us a request)."""
        host: list[bytes] = []
        agent: list[bytes] = []
        for name, value in scope.get("headers") or ():
            lowered = name.lower()
            if lowered == b"host":
                host.append(value)
            elif lowered == b"user-agent":
                agent.append(value)
        client = scope.get("client")
        server = scope.get("server")
        key = (
            scope.get("scheme"),
            tuple(server) if server is not None else None,
            scope.get("path"),
            scope.get("query_string"),
            scope.get("http_version"),
            scope.get("method"),
            tuple(client) if client is not None else None,
            tuple(host),
            tuple(agent),
        )
        if (
            len(scope.get("path") or "") + len(scope.get("query_string") or b"")
            + sum(map(len, host)) + sum(map(len, agent))
            > _ATTRIBUTE_KEY_BYTES
        ):
            # Only the gateway's usual requests are worth remembering: these parts arrive
            # before the gate, and a stranger's megabyte header must not be kept.
            attributes = collect_request_attributes(scope, self._mode)
            attributes[SpanAttributes.HTTP_ROUTE] = self.path
            return attributes
        known = self._attributes.get(key)
        if known is None:
            known = collect_request_attributes(scope, self._mode)
            known[SpanAttributes.HTTP_ROUTE] = self.path
            if len(self._attributes) >= _ATTRIBUTE_CACHE_SIZE:
                self._attributes.clear()
            self._attributes[key] = known
        return dict(known)

    async def _answer(self, request: Request) -> _Answer:
        try:
            address = await self.gate.check(request)
        except SignatureRefused as refused:
            log.warning("subgraph request refused", extra={"fields": {"reason": refused.reason}})
            return _refused(refused)
        except BodyTooLarge:
            return _refused(body_too_large())
        except DoorwardError as error:  # the nonce ledger could not answer
            return _refused(error)
        raw_type = request.headers.get("content-type", "")
        # What the gateway sends, read without strawberry's parser (the email package's header
        # parsing, a visible share of a small request); anything else as strawberry reads it.
        content_type = raw_type if raw_type == _JSON_TYPE else parse_content_type(raw_type)[0]
        if "application/json" not in content_type:
            return _text("Unsupported content type")
        try:
            data = _parse_json(await request.body())
        except json.JSONDecodeError:
            return _text("Unable to parse request body as JSON")
        if isinstance(data, list):
            return _text("Batching is not enabled")
        # Anything else but an object fails here as it failed in strawberry (500).
        query = data.get("query")
        if not isinstance(query, str | None):
            return _text("The GraphQL operation's `query` must be a string or null, if provided.")
        variables = data.get("variables")
        if not isinstance(variables, dict | None):
            return _text(
                "The GraphQL operation's `variables` must be an object or null, if provided."
            )
        extensions = data.get("extensions")
        if not isinstance(extensions, dict | None):
            return _text(
                "The GraphQL operation's `extensions` must be an object or null, if provided."
            )
        context = self.new_context(request, address)
        try:
            result = await self.schema.execute(
                query,
                root_value=None,
                variable_values=variables,
                context_value=context,
                operation_name=data.get("operationName"),
                allowed_operation_types=_POST_OPERATIONS,
                operation_extensions=extensions,
            )
        except CannotGetOperationTypeError as error:
            return _text(error.as_http_error_reason())
        except InvalidOperationTypeError as error:
            return _text(error.as_http_error_reason("POST"))
        except MissingQueryError:
            return _text("No GraphQL query found in the request")
        return _Answer(200, encode_answer(process_result(result)))


def mount_subgraph(app: FastAPI, router: GraphQLRouter[Any, Any], path: str = "/graphql") -> None:
    """The subgraph's router at `path` (GET, and POST where no edge is installed), and its POST
    answered by a SubgraphEdge on a ServiceApp (doorward_kit.http.create_app)."""
    app.include_router(router, prefix=path)
    if isinstance(app, ServiceApp) and isinstance(router, SubgraphRouter):
        app.post_edges[path] = SubgraphEdge(router, path=path)
