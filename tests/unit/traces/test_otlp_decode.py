"""The trace store's decoding of an OTLP export and the columns of its one-statement insert."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from services.traces.otlp import PROTOBUF, PayloadError, decode_traces
from services.traces.repository import _span_columns

pytestmark = pytest.mark.unit

T0 = 1_764_473_000_123_456_789  # ns


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def body(*spans: Span, service: str = "doorward-secrets") -> bytes:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [kv("service.name", service)]},
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    ).SerializeToString()


def span(n: int, trace: int = 1, start: int = T0, end: int | None = None, **attrs: str) -> Span:
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=n.to_bytes(8, "big"),
        name=f"op {n}",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 2_500_000 if end is None else end,
        attributes=[kv(k.replace("_", "."), v) for k, v in attrs.items()],
    )


def test_a_span_decodes_to_microseconds_and_allow_listed_attributes_only() -> None:
    (record,) = decode_traces(
        body(
            span(
                7,
                doorward_decision="deny",
                customer_email="x@example.com",
                http_url="https://u:pw@h/v1/x?token=t",
            )
        ),
        PROTOBUF,
    )
    assert record.trace_id == "00" * 15 + "01" and record.span_id == "00" * 7 + "07"
    assert record.parent_span_id is None
    assert (record.service, record.kind, record.status) == ("doorward-secrets", "SERVER", "UNSET")
    assert record.start_us == T0 // 1000 and record.duration_us == 2500
    assert record.started_at == datetime(2025, 11, 30, 3, 23, 20, 123456, tzinfo=UTC)
    assert record.attributes == {"doorward.decision": "deny", "http.url": "https://h/v1/x"}
    assert record.events == []


def test_an_end_before_the_start_is_a_zero_duration_and_bad_ids_are_refused() -> None:
    (record,) = decode_traces(body(span(1, end=T0 - 5)), PROTOBUF)
    assert record.duration_us == 0
    bad = span(1)
    bad.span_id = b"\x01"
    with pytest.raises(PayloadError):
        decode_traces(body(bad), PROTOBUF)


def test_the_insert_columns_are_in_key_order_once_per_key_with_the_filter_columns() -> None:
    records = decode_traces(
        body(
            span(3, trace=2, doorward_org_id="org-a"),
            span(1, trace=2, doorward_work_order_id="wo-1", enduser_pseudo_id="p-1"),
            span(2, trace=1, doorward_decision="allow", doorward_decision_reason="assigned"),
            span(1, trace=2),  # a repeat of a key within one export
        ),
        PROTOBUF,
    )
    columns = _span_columns(records)
    assert len({len(values) for values in columns.values()}) == 1
    keys = list(zip(columns["trace_id"], columns["span_id"], strict=True))
    assert keys == sorted(keys) and len(keys) == 3
    assert columns["decision"] == ["allow", None, None]
    assert columns["reason"] == ["assigned", None, None]
    assert columns["org_id"] == [None, None, "org-a"]
    assert columns["start_us"] == [T0 // 1000] * 3
    assert [json.loads(a) for a in columns["attributes"]][2] == {"doorward.org.id": "org-a"}
    assert columns["events"] == ["[]"] * 3
