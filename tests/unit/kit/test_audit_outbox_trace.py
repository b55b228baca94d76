"""The outbox sender delivers an event as a child of the span that recorded it, so the audit
write shows in the event's own trace (issue 13: one trace from the gateway to audit)."""

from __future__ import annotations

import pytest
from doorward.audit.v1 import audit_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from doorward_kit.audit_client import delivery_groups, parent_context, producer_span_id

pytestmark = pytest.mark.unit

T1, T2 = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
S1, S2 = "00f067aa0ba902b7", "b7ad6b7169203331"


def event(trace_id: str, span_id: str) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(trace_id=trace_id, producer_span_id=span_id)


def test_events_are_grouped_by_the_span_that_recorded_them() -> None:
    events = [event(T1, S1), event(T2, S2), event(T1, S1), event(T1, ""), event("", S1)]
    groups = delivery_groups(events)
    assert [len(groups[(T1, S1)]), len(groups[(T2, S2)]), len(groups[None])] == [2, 1, 2]
    # ids that are not W3C ids never become a parent
    for bad in (event("0" * 32, S1), event(T1, "0" * 16), event(T1.upper(), S1), event("x", S1)):
        assert list(delivery_groups([bad])) == [None]


def test_the_delivery_span_is_a_child_of_the_producer_span() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("deliver", context=parent_context((T1, S1))) as span:
        assert format(span.get_span_context().trace_id, "032x") == T1
        assert span.parent is not None and format(span.parent.span_id, "016x") == S1


def test_the_producer_span_is_recorded_only_for_the_events_own_trace() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    assert producer_span_id(T1) == ""  # no span
    with tracer.start_as_current_span("record") as span:
        context = span.get_span_context()
        own = format(context.trace_id, "032x")
        with trace.use_span(span):
            assert producer_span_id(own) == format(context.span_id, "016x")
            assert producer_span_id(T2) == ""  # an event naming another trace
