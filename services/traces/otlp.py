"""OTLP/HTTP payloads (protobuf or JSON) to plain records; pure, no I/O.

OTLP/JSON is proto3's JSON mapping with one difference: trace and span ids are hex strings, not
base64 (opentelemetry-proto's specification, "JSON Protobuf Encoding"), so they are turned into
base64 before protobuf's own parser sees them.

Every attribute goes through doorward_kit.span_policy on the way in: the store cannot trust that
a sender filtered.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from doorward_kit.span_policy import ALLOWED_KEYS, allowed_event, filter_attributes

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_KINDS = {
    ProtoSpan.SPAN_KIND_INTERNAL: "INTERNAL",
    ProtoSpan.SPAN_KIND_SERVER: "SERVER",
    ProtoSpan.SPAN_KIND_CLIENT: "CLIENT",
    ProtoSpan.SPAN_KIND_PRODUCER: "PRODUCER",
    ProtoSpan.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUSES = {
    ProtoStatus.STATUS_CODE_UNSET: "UNSET",
    ProtoStatus.STATUS_CODE_OK: "OK",
    ProtoStatus.STATUS_CODE_ERROR: "ERROR",
}
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PayloadError(ValueError):
    """The body is not an OTLP request of the declared type (the message names no content)."""


@dataclass(slots=True)
class SpanRecord:
    """One decoded span. Its start is kept as microseconds since the epoch (what the store's
    bulk insert sends); `started_at` makes the datetime only when something asks."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: str
    start_us: int
    duration_us: int
    status: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def started_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.start_us)

    def attribute(self, key: str) -> str | None:
        value = self.attributes.get(key)
        return None if value is None else str(value)


@dataclass(frozen=True)
class MetricRecord:
    name: str
    service: str
    kind: str
    at: datetime
    value: float
    count: int | None
    attributes: dict[str, Any]


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str) and value:
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as error:
                    raise PayloadError(f"{key} is not hex") from error
            else:
                value = _hex_ids_to_base64(value)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def _parse(body: bytes, content_type: str, message: Message) -> None:
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        if media == PROTOBUF:
            message.ParseFromString(body)
        elif media == JSON:
            json_format.ParseDict(
                _hex_ids_to_base64(json.loads(body)), message, ignore_unknown_fields=True
            )
        else:
            raise PayloadError(f"unsupported content type {media!r}: use {PROTOBUF} or {JSON}")
    except (
        DecodeError,
        json_format.ParseError,
        json.JSONDecodeError,
        UnicodeDecodeError,
        RecursionError,
        binascii.Error,
    ) as error:
        raise PayloadError(f"the body is not a valid OTLP request ({media})") from error


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    # kvlist and bytes values carry nothing the allow-list keeps.
    return None


def _attributes(items: Any) -> dict[str, Any]:
    # Keys outside the allow-list are skipped before their values are even converted (most of
    # a span's attributes); the policy itself (URLs cut down) then runs on what is left.
    raw = {kv.key: _value(kv.value) for kv in items if kv.key in ALLOWED_KEYS}
    return filter_attributes(raw)


def _time(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, tz=UTC)


def _service(resource_attributes: Any) -> str:
    for kv in resource_attributes:
        if kv.key == "service.name":
            return str(_value(kv.value) or "unknown")[:128]
    return "unknown"


def decode_traces(body: bytes, content_type: str) -> list[SpanRecord]:
    request = ExportTraceServiceRequest()
    _parse(body, content_type, request)
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        service = _service(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id, span_id = span.trace_id, span.span_id
                if len(trace_id) != 16 or len(span_id) != 8:
                    raise PayloadError("a span has no valid trace or span id")
                start = span.start_time_unix_nano
                end = max(span.end_time_unix_nano, start)
                records.append(
                    SpanRecord(
                        trace_id=trace_id.hex(),
                        span_id=span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        service=service,
                        name=span.name[:256],
                        kind=_KINDS.get(span.kind, "INTERNAL"),
                        start_us=start // 1000,
                        duration_us=(end - start) // 1000,
                        status=_STATUSES.get(span.status.code, "UNSET"),
                        attributes=_attributes(span.attributes),
                        events=[
                            {
                                "name": event.name,
                                "at": _time(event.time_unix_nano).isoformat(),
                                "attributes": _attributes(event.attributes),
                            }
                            for event in span.events
                            if allowed_event(event.name)
                        ]
                        if span.events
                        else [],
                    )
                )
    return records


def decode_metrics(body: bytes, content_type: str) -> list[MetricRecord]:
    request = ExportMetricsServiceRequest()
    _parse(body, content_type, request)
    records: list[MetricRecord] = []
    for resource_metrics in request.resource_metrics:
        service = _service(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                records.extend(_points(metric, service))
    return records


def _points(metric: Any, service: str) -> list[MetricRecord]:
    kind = metric.WhichOneof("data")
    out: list[MetricRecord] = []
    if kind in ("gauge", "sum"):
        for point in getattr(metric, kind).data_points:
            number = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
            out.append(
                MetricRecord(
                    metric.name[:256],
                    service,
                    kind,
                    _time(point.time_unix_nano),
                    float(number),
                    None,
                    _attributes(point.attributes),
                )
            )
    elif kind in ("histogram", "exponential_histogram", "summary"):
        for point in getattr(metric, kind).data_points:
            out.append(
                MetricRecord(
                    metric.name[:256],
                    service,
                    kind,
                    _time(point.time_unix_nano),
                    float(point.sum),
                    int(point.count),
                    _attributes(point.attributes),
                )
            )
    return out
