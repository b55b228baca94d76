"""The export's own OTLP encoding (doorward_kit.otlp_encoding): the same request, message for
message, as the OTLP exporter's encoder given the redacted copies of the spans."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

from doorward_kit.otlp_encoding import encode_redacted
from doorward_kit.telemetry import RedactingExporter, redacted

pytestmark = pytest.mark.unit

_KEYS = st.sampled_from(
    [
        "doorward.decision",
        "doorward.work_order.id",
        "http.url",
        "url.full",
        "http.target",
        "rpc.method",
        "db.statement",
        "customer.phone",
        "graphql.variables",
    ]
)
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["https://u:pw@host:8200/v1/x?token=abc#f", "/graphql?variables={}"]),
)
_VALUES = st.one_of(_SCALARS, st.lists(st.text(max_size=5), max_size=3).map(tuple))
_ATTRIBUTES = st.dictionaries(_KEYS, _VALUES, max_size=6)
_RESOURCES = [
    Resource.create({"service.name": "doorward-workorders"}),
    Resource.create({"service.name": "doorward-audit"}),
]
_SCOPES = [
    InstrumentationScope("doorward"),
    InstrumentationScope("opentelemetry.instrumentation.grpc", "0.1", "https://schema"),
    None,
]


def _context(trace_id: int, span_id: int, remote: bool, state: bool) -> SpanContext:
    return SpanContext(
        trace_id,
        span_id,
        is_remote=remote,
        trace_state=TraceState([("vendor", "v1")]) if state else None,
    )


_CONTEXTS = st.builds(
    _context,
    st.integers(min_value=1, max_value=2**128 - 1),
    st.integers(min_value=1, max_value=2**64 - 1),
    st.booleans(),
    st.booleans(),
)


@st.composite
def _spans(draw: Any) -> ReadableSpan:
    events = [
        Event(
            draw(st.sampled_from(["exception", "doorward.decision", "log"])),
            draw(_ATTRIBUTES),
            draw(st.integers(min_value=0, max_value=2**63)),
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    links = [Link(draw(_CONTEXTS), draw(_ATTRIBUTES)) for _ in range(draw(st.integers(0, 2)))]
    return ReadableSpan(
        name=draw(st.text(max_size=20)),
        context=draw(_CONTEXTS),
        parent=draw(st.one_of(st.none(), _CONTEXTS)),
        resource=draw(st.sampled_from(_RESOURCES)),
        attributes=draw(_ATTRIBUTES),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(
            draw(st.sampled_from(list(StatusCode))),
            draw(st.sampled_from([None, "password hunter2 refused"])),
        ),
        start_time=draw(st.integers(min_value=0, max_value=2**63)),
        end_time=draw(st.integers(min_value=0, max_value=2**63)),
        instrumentation_scope=draw(st.sampled_from(_SCOPES)),
    )


def _by_span(request: ExportTraceServiceRequest) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """Each span with its resource and scope, in order (grouping may differ in shape)."""
    rows = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                rows.append(
                    (
                        resource_spans.resource.SerializeToString(deterministic=True),
                        scope_spans.scope.SerializeToString(deterministic=True)
                        + scope_spans.schema_url.encode(),
                        resource_spans.schema_url.encode(),
                        span.SerializeToString(deterministic=True),
                    )
                )
    return sorted(rows)


@settings(max_examples=300, deadline=None)
@given(st.lists(_spans(), max_size=8))
def test_the_request_is_the_exporters_encoding_of_the_redacted_spans(
    spans: list[ReadableSpan],
) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_redacted(spans))
    theirs = encode_spans([redacted(span) for span in spans])
    assert _by_span(ours) == _by_span(theirs)


def test_spans_of_one_resource_and_scope_share_one_group() -> None:
    context = _context(1, 2, False, False)
    span = ReadableSpan(
        name="SELECT",
        context=context,
        resource=_RESOURCES[0],
        instrumentation_scope=_SCOPES[0],
    )
    request = ExportTraceServiceRequest.FromString(encode_redacted([span, span, span]))
    (resource_spans,) = request.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    assert len(scope_spans.spans) == 3


def test_the_otlp_exporter_is_driven_through_its_http_client() -> None:
    """The pinned exporter still has the client the fast path hands bytes to; if a release
    drops it, the wrapper falls back to the exporter's own encoding (and this test says so)."""
    wrapper = RedactingExporter(OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces"))
    assert wrapper._otlp_client is not None
