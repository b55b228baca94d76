"""OpenTelemetry: one tracer provider per process, W3C trace-context propagation everywhere.

The exporter follows the standard variables: OTEL_TRACES_EXPORTER (otlp | console | none) and
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT. With none of them set, spans
are still created (trace ids reach logs and audit events) but nothing is exported.
DOORWARD_OTEL_FILE=path additionally writes every finished span as a JSON line (tests read it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from doorward_kit.otlp_encoding import encode_redacted
from doorward_kit.span_policy import allowed_event, filter_attributes

_configured = False


def redacted(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` with only allow-listed attributes (doorward_kit.span_policy), only
    allow-listed events, link attributes filtered and no status description (an exception's
    message can quote input)."""
    events = [
        Event(event.name, filter_attributes(event.attributes), event.timestamp)
        for event in span.events
        if allowed_event(event.name)
    ]
    links = [trace.Link(link.context, filter_attributes(link.attributes)) for link in span.links]
    status = trace.Status(span.status.status_code)
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=filter_attributes(span.attributes),
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingExporter(SpanExporter):
    """Wraps every exporter of a Doorward process: nothing leaves unfiltered.

    In front of the OTLP/HTTP exporter it encodes the request itself, redacting as it writes
    (doorward_kit.otlp_encoding: a quarter of the CPU of a redacted copy encoded by the
    exporter), and hands the bytes to the exporter's HTTP client, which keeps the exporter's
    endpoint, headers, certificates, compression, timeout and retries. That client is not the
    exporter's public API: where a release lacks it, the exporter's own path is taken."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._otlp_client = _otlp_http_client(inner)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._otlp_client is not None:
            if getattr(self._inner, "_shutdown", False):
                return SpanExportResult.FAILURE
            sent = self._otlp_client.export(encode_redacted(spans))
            return SpanExportResult.SUCCESS if sent.success else SpanExportResult.FAILURE
        return self._inner.export([redacted(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _otlp_http_client(exporter: SpanExporter) -> Any:
    """The HTTP client of an OTLP/HTTP span exporter (opentelemetry-exporter-otlp-proto-http
    1.40 and later: `_client.export(bytes)` returning a result with `success`), or None."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if type(exporter) is not OTLPSpanExporter:
        return None
    client = getattr(exporter, "_client", None)
    return client if callable(getattr(client, "export", None)) else None


class JsonLinesFileExporter(SpanExporter):
    """Appends spans as JSON lines; used by tests to search spans for planted canaries."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock, open(self._path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(span.to_json(indent=None) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def otlp_session() -> Any:
    """The requests session of the OTLP/HTTP exporters (OtlpSession)."""
    return _otlp_session_class()()


@functools.cache
def _otlp_session_class() -> type[Any]:
    import requests
    import requests.utils

    class OtlpSession(requests.Session):
        """A requests session that reads the environment once, not on every export.

        With requests' `trust_env` every request looked for ~/.netrc (a stat per export, a
        visible share of identity's exporter thread) and re-parsed the proxy variables. Here
        `trust_env` is off, and what the exporter needs from the environment is read once per
        URL (the exporter sends to one or two) at the first export: the operator's proxies
        (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), and REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE where
        no OTLP certificate is set. A certificate named by OTEL_EXPORTER_OTLP_* (the session's
        own `verify`) wins over those bundles: requests lets them override a session's own
        `verify`, which would check the trace store against the wrong CAs. No netrc
        credentials: the exporters authenticate with their certificate (or headers)."""

        def __init__(self) -> None:
            super().__init__()
            self.trust_env = False
            self._environment: dict[tuple[str, str | None], tuple[dict[str, str], str | None]]
            self._environment = {}

        def merge_environment_settings(
            self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
        ) -> Any:
            no_proxy = (proxies or {}).get("no_proxy")
            key = (str(url), no_proxy)
            found = self._environment.get(key)
            if found is None:
                bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                found = (requests.utils.get_environ_proxies(str(url), no_proxy=no_proxy), bundle)
                if len(self._environment) < 16:
                    self._environment[key] = found
            env_proxies, bundle = found
            proxies = dict(proxies or {})
            for scheme, proxy in env_proxies.items():
                proxies.setdefault(scheme, proxy)
            if isinstance(self.verify, str):
                verify = self.verify
            elif (verify is True or verify is None) and bundle:
                verify = bundle
            return super().merge_environment_settings(url, proxies, stream, verify, cert)

    return OtlpSession


def _exporter_from_env() -> SpanExporter | None:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    if choice == "otlp" or (not choice and endpoint):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(session=otlp_session())
    return None


# The batch span processor's bounds where the standard OTEL_BSP_* variables say nothing. The
# SDK's own queue (2048 spans) is two seconds of workorders' spans at the goal of 100 boards a
# second (some 10 spans a board): a store that paused for a moment (a prune, a slow disk)
# would make the exporter drop spans ("Queue full"). 8192 finished spans are a few MB per
# process at most. An export takes up to 512 spans; the worker sends a batch as soon as 512
# are queued, else every OTEL_BSP_SCHEDULE_DELAY ms, so a busy process sends full batches
# (one request, one statement at the store) and an idle one sends nothing.
BSP_MAX_QUEUE_SIZE = 8192
BSP_MAX_EXPORT_BATCH_SIZE = 512


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        return default  # what the SDK does with a value it cannot read
    return value if value > 0 else default


def batch_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    """Every process's span export: batched (a background thread), bounded, in full batches.
    OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_EXPORT_TIMEOUT keep the SDK's reading."""
    queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", BSP_MAX_QUEUE_SIZE)
    batch = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", BSP_MAX_EXPORT_BATCH_SIZE), queue)
    return BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=batch)


def setup_telemetry(service_name: str, *, instrument_libraries: bool = True) -> TracerProvider:
    """Install the tracer provider and the library instrumentations (idempotent).

    The gateway passes instrument_libraries=False: it makes one span per subgraph fetch and
    injects trace context itself, and an httpx span per fetch would only cost time."""
    global _configured
    if _configured:
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        return provider
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"doorward-{service_name}"})
    )
    exporter = _exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(batch_processor(RedactingExporter(exporter)))
    span_file = os.environ.get("DOORWARD_OTEL_FILE")
    if span_file:
        provider.add_span_processor(
            SimpleSpanProcessor(RedactingExporter(JsonLinesFileExporter(span_file)))
        )
    trace.set_tracer_provider(provider)
    from doorward_kit.metrics import setup_metrics_export

    setup_metrics_export(service_name)
    if instrument_libraries:
        _instrument_libraries()
    _configured = True
    return provider


def _instrument_libraries() -> None:
    # No gRPC instrumentation: doorward_kit.grpc makes the CLIENT and SERVER spans of every
    # internal call and carries the trace context itself (doorward_kit.grpc_spans; the
    # instrumentation's interceptors cost ~0.3 ms of CPU per call on each side).
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    HTTPXClientInstrumentor().instrument()
    # hvac speaks HTTP through requests: this is what makes Vault calls visible in a trace.
    RequestsInstrumentor().instrument()


class _InTraceTracer(trace.Tracer):
    """The SQLAlchemy instrumentation's tracer: a statement gets a span only inside a trace
    (a request, a job or a decision span above it). A statement nothing encloses is a
    background poll (every process's audit outbox every second, the revocation outboxes,
    sweeps): a trace of one `SELECT` that no security-ops question leads to, yet each was
    created, exported and stored. Those get the non-recording span instead."""

    def __init__(self, inner: trace.Tracer) -> None:
        self._inner = inner

    def start_span(
        self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
    ) -> trace.Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self._inner.start_span(name, context, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        *args: Any,
        end_on_exit: bool = True,
        **kwargs: Any,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, *args, **kwargs)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current


# The instrumentation's pool events: each feeds its connection-usage counter, twice per
# checkout and twice per checkin.
_POOL_EVENTS = frozenset({"connect", "close", "checkin", "checkout"})
# The SQL tracing of every engine of the process: one tracer (statements inside a trace only),
# made once, and the engines whose pools the connection-usage metric reads.
_SQL_TRACER: list[trace.Tracer] = []
_USAGE_SOURCES: list[tuple[weakref.ref[Any], dict[str, Any]]] = []


@functools.cache
def _statement_tracer_class() -> type:
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    class StatementTracer(EngineTracer):
        """The instrumentation's engine tracer without its pool listeners: they counted
        connections in use with an UpDownCounter, ~20 us a measurement (the SDK's attribute
        hashing and exemplar sampling), four per checkout and checkin: 7 % of workorders' CPU
        under the board bench. The same metric is read from the pool when it is collected
        (`_connection_usage`)."""

        @classmethod
        def _register_event_listener(
            cls, target: Any, identifier: str, func: Any, *args: Any, **kw: Any
        ) -> None:
            if identifier not in _POOL_EVENTS:
                super()._register_event_listener(target, identifier, func, *args, **kw)

    return StatementTracer


def _connection_usage(_options: Any) -> Iterator[Any]:
    """`db.client.connections.usage` (the instrumentation's name and attributes) by pool and
    state, read from each instrumented engine's pool at collection time."""
    from opentelemetry.metrics import Observation

    for engine_ref, attributes in list(_USAGE_SOURCES):
        engine = engine_ref()
        if engine is None:
            _USAGE_SOURCES.remove((engine_ref, attributes))
            continue
        pool = engine.pool
        if not (hasattr(pool, "checkedout") and hasattr(pool, "checkedin")):
            continue  # a pool without counts (NullPool, StaticPool)
        yield Observation(pool.checkedout(), {**attributes, "state": "used"})
        yield Observation(pool.checkedin(), {**attributes, "state": "idle"})


def instrument_engine(engine: Any) -> None:
    """A span per SQL statement of `engine` (statements carry placeholders only), inside a
    trace only (_InTraceTracer), and no span per pool checkout.

    The instrumentation's own entry point (SQLAlchemyInstrumentor().instrument) wraps
    Engine.connect, which every session calls for its checkout: a "connect" span per session
    that named the database and nothing else (the statements' spans do too), a fifth of all
    spans a board made. It instruments the first engine only, too. So each engine gets the
    instrumentation's engine tracer (its statement events) directly, without its pool
    listeners (see StatementTracer)."""
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.metrics import get_meter
    from opentelemetry.semconv.metrics import MetricInstruments

    name = "opentelemetry.instrumentation.sqlalchemy"
    if not _SQL_TRACER:
        get_meter(name, __version__).create_observable_up_down_counter(
            name=MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE,
            callbacks=[_connection_usage],
            unit="connections",
            description="The number of connections that are currently in state described by "
            "the state attribute.",
        )
        # The global provider's tracer (a proxy until setup_telemetry installs it).
        _SQL_TRACER.append(_InTraceTracer(trace.get_tracer(name, __version__)))
    # The instrumentation's declared range stops below SQLAlchemy 2.1, but the engine events it
    # hooks are unchanged there (tests check the spans).
    tracer = _statement_tracer_class()(_SQL_TRACER[0], engine.sync_engine, None)
    _USAGE_SOURCES.append((weakref.ref(engine.sync_engine), dict(tracer._engine_attrs)))


# Trace-context headers a client may send. At the edge they never choose the trace: a client
# could otherwise pick the traceId the audit trail records for its own requests.
CLIENT_TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
_CLIENT_TRACE_SCOPE_KEY = "doorward.client_trace"


def client_trace_links(carrier: Mapping[str, str]) -> list[trace.Link]:
    """The client's trace context (if any) as a span link for a new trace started at the edge:
    kept for correlation, never continued. Internal hops propagate normally."""
    sc = trace.get_current_span(propagate.extract(carrier, context=Context())).get_span_context()
    if not sc.is_valid:
        return []
    return [trace.Link(sc, {"doorward.link": "client"})]


_Scope = MutableMapping[str, Any]
_Asgi = Callable[[_Scope, Any, Any], Awaitable[None]]


class _ClientTraceAsLink:
    """ASGI wrapper outside the OpenTelemetry middleware: takes the trace-context headers out of
    the request so the server span starts a new trace, and keeps them for the link."""

    def __init__(self, app: _Asgi) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            client = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in scope.get("headers") or ()
                if k.decode("latin-1").lower() in CLIENT_TRACE_HEADERS
            }
            if client:
                scope = dict(scope)
                scope["headers"] = [
                    (k, v)
                    for k, v in scope.get("headers") or ()
                    if k.decode("latin-1").lower() not in CLIENT_TRACE_HEADERS
                ]
                scope[_CLIENT_TRACE_SCOPE_KEY] = client_trace_links(client)
        await self.app(scope, receive, send)


def _link_client_trace(span: trace.Span, scope: Mapping[str, Any]) -> None:
    for link in scope.get(_CLIENT_TRACE_SCOPE_KEY) or ():
        span.add_link(link.context, link.attributes)


def instrument_fastapi(app: Any, *, edge: bool = False, tracer_provider: Any = None) -> None:
    """Server spans for `app`. `edge=True` for a port the internet reaches: a client's
    traceparent becomes a link of a new trace instead of the trace the request joins.
    `tracer_provider`: the global one unless given (tests)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="healthz,readyz",
        server_request_hook=_link_client_trace if edge else None,
        # No span per ASGI message ("http receive", two "http send"): three of a subgraph
        # call's spans that said nothing the server span does not, each exported and stored.
        exclude_spans=["receive", "send"],
        tracer_provider=tracer_provider,
    )
    if edge:
        # The instrumentation wraps the middleware stack; this wraps it once more, outermost,
        # so the headers are gone before the instrumentation extracts a parent from them.
        instrumented = app.build_middleware_stack

        def build_middleware_stack() -> Any:
            return _ClientTraceAsLink(instrumented())

        app.build_middleware_stack = build_middleware_stack


def current_trace_id() -> str:
    """The W3C trace id of the current span as 32 hex digits, or '' outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
