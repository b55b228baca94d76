"""Finished spans to an OTLP `ExportTraceServiceRequest`, redacted on the way (span_policy).

The OTLP exporter's own encoder (`opentelemetry.exporter.otlp.proto.common`) builds every
attribute, event and span as a free-standing protobuf message and then copies it into its
parent, and groups spans by hashing their `Resource` (a `json.dumps` of its attributes per
span). With the redaction that first copied every span into a new `ReadableSpan`, that was
~90 µs of CPU a span on each process's export thread: more than a millisecond of every board.
Here each span is written once, in place (`add()` on the parent's repeated field), and only
what span_policy allows is written at all, so the redaction is the encoding.

The result equals `encode_spans([redacted(span) for span in spans])` message for message
(tests/unit/traces/test_otlp_encoding.py compares them); only the grouping keys differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, SpanFlags
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from doorward_kit.span_policy import _URL_KEYS, ALLOWED_KEYS, allowed_event, clean_url

_KIND: dict[SpanKind, Any] = {
    SpanKind.INTERNAL: Span.SpanKind.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: Span.SpanKind.SPAN_KIND_SERVER,
    SpanKind.CLIENT: Span.SpanKind.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: Span.SpanKind.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: Span.SpanKind.SPAN_KIND_CONSUMER,
}
_HAS_IS_REMOTE = int(SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
_IS_REMOTE = int(SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)


def encode_redacted(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized request carrying `spans`, with only allow-listed attributes and events,
    filtered link attributes and no status description (an exception's message can quote
    input)."""
    request = ExportTraceServiceRequest()
    resources: dict[int, Any] = {}
    scopes: dict[tuple[int, str, str | None, str | None], ScopeSpans] = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope
        scope_key = (
            id(resource),
            scope.name if scope else "",
            scope.version if scope else None,
            scope.schema_url if scope else None,
        )
        scope_spans = scopes.get(scope_key)
        if scope_spans is None:
            resource_spans = resources.get(id(resource))
            if resource_spans is None:
                resource_spans = request.resource_spans.add()
                # The process's own resource (service.name): not span data, not filtered.
                _write_attributes(resource_spans.resource.attributes, resource.attributes, False)
                if resource.schema_url:
                    resource_spans.schema_url = resource.schema_url
                resources[id(resource)] = resource_spans
            scope_spans = resource_spans.scope_spans.add()
            if scope is not None:
                scope_spans.scope.name = scope.name
                if scope.version:
                    scope_spans.scope.version = scope.version
                if scope.schema_url:
                    scope_spans.schema_url = scope.schema_url
            scopes[scope_key] = scope_spans
        _write_span(scope_spans.spans.add(), span)
    return request.SerializeToString()


def _write_span(out: Span, span: ReadableSpan) -> None:
    context = span.context
    assert context is not None  # a finished SDK span always has one
    out.trace_id = context.trace_id.to_bytes(16, "big")
    out.span_id = context.span_id.to_bytes(8, "big")
    if context.trace_state:
        out.trace_state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
    parent = span.parent
    flags = _HAS_IS_REMOTE
    if parent is not None:
        out.parent_span_id = parent.span_id.to_bytes(8, "big")
        if parent.is_remote:
            flags |= _IS_REMOTE
    out.flags = flags
    out.name = span.name
    out.kind = _KIND[span.kind]
    if span.start_time is not None:
        out.start_time_unix_nano = span.start_time
    if span.end_time is not None:
        out.end_time_unix_nano = span.end_time
    _write_attributes(out.attributes, span.attributes, True)
    for event in span.events:
        if not allowed_event(event.name):
            continue
        written = out.events.add()
        written.name = event.name
        written.time_unix_nano = event.timestamp
        _write_attributes(written.attributes, event.attributes, True)
    for link in span.links:
        linked = out.links.add()
        linked.trace_id = link.context.trace_id.to_bytes(16, "big")
        linked.span_id = link.context.span_id.to_bytes(8, "big")
        linked.flags = _HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)
        _write_attributes(linked.attributes, link.attributes, True)
    # The status code only: its description is dropped (see encode_redacted).
    out.status.SetInParent()
    out.status.code = span.status.status_code.value  # type: ignore[assignment]
    # What the SDK itself dropped (limits): counts, no content.
    if span.dropped_attributes:
        out.dropped_attributes_count = span.dropped_attributes
    if span.dropped_events:
        out.dropped_events_count = span.dropped_events
    if span.dropped_links:
        out.dropped_links_count = span.dropped_links


def _write_attributes(out: Any, attributes: Mapping[str, Any] | None, filtered: bool) -> None:
    if not attributes:
        return
    for key, value in attributes.items():
        if filtered:
            if key not in ALLOWED_KEYS:
                continue
            if key in _URL_KEYS:
                if not isinstance(value, str):
                    continue  # as span_policy.filter_attributes: only a string, cleaned
                value = clean_url(value)
        pair = out.add()
        pair.key = key
        _write_value(pair.value, value)


def _write_value(out: AnyValue, value: Any) -> None:
    # The order of the OTLP encoder's own _encode_value: bool before int (a bool is an int).
    if value is None:
        return
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, Sequence):
        array = out.array_value
        array.SetInParent()
        for item in value:
            _write_value(array.values.add(), item)
    elif isinstance(value, Mapping):
        pairs = out.kvlist_value
        pairs.SetInParent()
        for key, item in value.items():
            pair = pairs.values.add()
            pair.key = str(key)
            _write_value(pair.value, item)
    else:
        raise TypeError(f"an attribute value of type {type(value).__name__} cannot be encoded")
