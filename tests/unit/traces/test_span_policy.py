"""The span attribute allow-list (doorward_kit.span_policy) and the exporter wrapper."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from doorward_kit.span_policy import clean_url, filter_attributes
from doorward_kit.telemetry import RedactingExporter

pytestmark = pytest.mark.unit


def test_only_allow_listed_keys_survive() -> None:
    kept = filter_attributes(
        {
            "doorward.decision": "deny",
            "rpc.method": "IssueGrant",
            "graphql.variables": '{"password": "x"}',
            "customer.phone": "+44",
            "db.statement": "SELECT 1",
        }
    )
    assert kept == {"doorward.decision": "deny", "rpc.method": "IssueGrant"}


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://u:pw@host:8200/v1/x?token=abc#frag", "https://host:8200/v1/x"),
        ("/graphql?query={me}&variables={}", "/graphql"),
        ("http://[::1]:4000/graphql", "http://::1:4000/graphql"),
    ],
)
def test_urls_lose_query_fragment_and_user_info(url: str, clean: str) -> None:
    assert clean_url(url) == clean


def test_the_exporter_wrapper_drops_values_messages_and_status_descriptions() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(memory)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        span.set_attribute("user.email", "a@b.example")
        span.set_attribute("doorward.grant.id", "g-1")
        span.add_event("exception", {"exception.type": "E", "exception.message": "pw=hunter2"})
        span.add_event("log", {"message": "secret"})
        span.set_status(Status(StatusCode.ERROR, "value 4711 refused"))
    (exported,) = memory.get_finished_spans()
    assert dict(exported.attributes or {}) == {"doorward.grant.id": "g-1"}
    assert [(e.name, dict(e.attributes or {})) for e in exported.events] == [
        ("exception", {"exception.type": "E"})
    ]
    assert exported.status.status_code is StatusCode.ERROR
    assert not exported.status.description


def test_the_tree_puts_children_under_parents_and_orphans_at_the_root() -> None:
    from datetime import UTC, datetime, timedelta

    from services.traces.cli import SpanLine, render_tree

    t0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def span(sid: str, parent: str | None, ms: int, **attrs: object) -> SpanLine:
        return SpanLine(
            sid,
            parent,
            "svc",
            f"span-{sid}",
            t0 + timedelta(milliseconds=ms),
            1500,
            "UNSET",
            dict(attrs),
        )

    lines = render_tree(
        [
            span("c", "a", 2, **{"doorward.decision": "allow"}),
            span("a", None, 0),
            span("o", "gone", 5),
            span("b", "a", 1),
        ]
    )
    assert lines == [
        "svc span-a  +0.0ms 1.5ms",
        "  svc span-b  +1.0ms 1.5ms",
        "  svc span-c  +2.0ms 1.5ms  doorward.decision=allow",
        "svc span-o  +5.0ms 1.5ms",
    ]


def test_a_url_attribute_that_is_not_a_string_is_dropped() -> None:
    """A list of URLs would keep its query strings: a URL key keeps only a string, cleaned."""
    kept = filter_attributes(
        {"http.url": ["https://h/x?token=abc"], "url.full": "https://h/y?token=abc"}
    )
    assert kept == {"url.full": "https://h/y"}
