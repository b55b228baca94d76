"""The embedded trace store on real PostgreSQL and real HTTP: the standard OTLP exporter sends to
it, JSON and protobuf both land, repeats are ignored, nothing outside the allow-list is stored,
bad and oversized bodies are refused, and retention deletes what is past its age."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from services.traces.repository import TraceQuery
from tests.integration.traces.harness import running_store

pytestmark = pytest.mark.integration

CANARY = "canary-4711-door-code"


def export_spans(url: str, org_id: str) -> str:
    """Two spans through the real OTLP/HTTP protobuf exporter; returns the trace id. Blocking
    (the exporter uses requests): run it in a thread while the store serves in the loop."""
    provider = TracerProvider(resource=Resource.create({"service.name": "doorward-secrets"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /v1/reveals/{grant_id}") as outer:
        outer.set_attribute("doorward.org.id", org_id)
        outer.set_attribute("http.url", f"http://h/v1/reveals/g1?token={CANARY}")
        with tracer.start_as_current_span("doorward.secret.reveal") as inner:
            inner.set_attribute("doorward.decision", "deny")
            inner.set_attribute("doorward.decision.reason", "consumed")
            inner.set_attribute("doorward.work_order.id", "wo-1")
            inner.set_attribute("customer.email", f"{CANARY}@example.com")
            inner.add_event("exception", {"exception.type": "X", "exception.message": CANARY})
        trace_id = format(outer.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


async def test_standard_exporter_lands_and_only_allow_listed_keys_are_stored(postgres) -> None:
    async with running_store(postgres) as s:
        trace_id = await asyncio.to_thread(export_spans, s.url, "org-a")
        conn = await asyncpg.connect(s.dsn)
        try:
            rows = await conn.fetch("SELECT * FROM spans WHERE trace_id = $1", trace_id)
            summary = await conn.fetchrow("SELECT * FROM traces WHERE trace_id = $1", trace_id)
            dump = json.dumps([dict(r) for r in rows], default=str)
        finally:
            await conn.close()
        assert len(rows) == 2
        assert summary["org_id"] == "org-a" and summary["span_count"] == 2
        assert summary["services"] == ["doorward-secrets"]
        decision = next(r for r in rows if r["name"] == "doorward.secret.reveal")
        assert (decision["decision"], decision["reason"]) == ("deny", "consumed")
        assert decision["work_order_id"] == "wo-1"
        # the canary was in a dropped key, a URL query string and an exception message
        assert CANARY not in dump
        outer = next(r for r in rows if r["name"] != "doorward.secret.reveal")
        assert json.loads(outer["attributes"])["http.url"] == "http://h/v1/reveals/g1"


async def test_json_encoding_with_hex_ids_and_repeats_are_ignored(postgres) -> None:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    now = datetime.now(UTC)
    start = int(now.timestamp() * 1e9)
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "doorward-gateway"}}
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "POST /graphql",
                                "kind": 2,
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": str(start + 3_000_000),
                                "attributes": [
                                    {"key": "doorward.org.id", "value": {"stringValue": "org-b"}}
                                ],
                                "status": {"code": 1},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    async with running_store(postgres) as s, httpx.AsyncClient() as client:
        for _ in range(2):  # an exporter retry sends the same spans again
            answer = await client.post(f"{s.url}/v1/traces", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("application/json")
        async with s.db.unit_of_work() as session:  # type: ignore[attr-defined]
            view = await s.store.trace(session, "org-b", trace_id)
            other_org = await s.store.trace(session, "org-a", trace_id)
        assert view is not None and len(view.spans) == 1
        assert view.summary.span_count == 1
        assert view.spans[0].kind == "SERVER" and view.spans[0].status == "OK"
        assert view.spans[0].duration_us == 3000
        assert other_org is None  # another organisation gets nothing, not even "exists"


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({"content-type": "text/plain"}, b"hello", 415),
        ({"content-type": "application/x-protobuf"}, b"\xff\xff\xff not protobuf", 400),
        ({"content-type": "application/json"}, b"{not json", 400),
        (
            {"content-type": "application/json"},
            b'{"resourceSpans": [{"scopeSpans": [{"spans":'
            b' [{"traceId": "zz", "spanId": "01"}]}]}]}',
            400,
        ),
        ({"content-type": "application/x-protobuf", "content-encoding": "br"}, b"x", 415),
        ({"content-type": "application/x-protobuf", "content-encoding": "gzip"}, b"not gz", 400),
    ],
)
async def test_bad_bodies_are_refused_with_a_client_error(postgres, headers, content, status):
    async with running_store(postgres) as s, httpx.AsyncClient() as client:
        answer = await client.post(f"{s.url}/v1/traces", content=content, headers=headers)
        assert answer.status_code == status
        assert answer.json()["error"]["code"] == "BAD_USER_INPUT"


async def test_bodies_over_the_limit_are_refused_also_when_streamed_or_compressed(postgres):
    async with (
        running_store(postgres, traces_max_body_bytes=4096) as s,
        httpx.AsyncClient() as client,
    ):
        big = await client.post(
            f"{s.url}/v1/traces",
            content=b"\0" * 10_000,
            headers={"content-type": "application/x-protobuf"},
        )
        assert big.status_code == 413

        async def chunks():  # no Content-Length: the limit must hold while streaming
            for _ in range(100):
                yield b"\0" * 1000

        streamed = await client.post(
            f"{s.url}/v1/traces",
            content=chunks(),
            headers={"content-type": "application/x-protobuf"},
        )
        assert streamed.status_code == 413
        bomb = gzip.compress(b"\0" * 10_000_000)  # ~10 KB that inflates to 10 MB
        inflated = await client.post(
            f"{s.url}/v1/traces",
            content=bomb[:4000],
            headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
        )
        assert inflated.status_code == 413


async def test_retention_deletes_what_is_past_its_age_and_keeps_the_rest(postgres) -> None:
    async with running_store(postgres, traces_retention_days=14) as s:
        old_trace = await asyncio.to_thread(export_spans, s.url, "org-c")
        new_trace = await asyncio.to_thread(export_spans, s.url, "org-c")
        conn = await asyncpg.connect(s.dsn)
        try:
            await conn.execute(
                "UPDATE spans SET started_at = started_at - interval '15 days' WHERE trace_id = $1",
                old_trace,
            )
            await conn.execute(
                "UPDATE traces SET started_at = started_at - interval '15 days', "
                "ended_at = ended_at - interval '15 days' WHERE trace_id = $1",
                old_trace,
            )
            async with s.db.unit_of_work() as session:  # type: ignore[attr-defined]
                listed = await s.store.traces(session, "org-c", TraceQuery(), 10)
                assert [t.trace_id for t in listed] == [new_trace]  # expired: not listed
                while await s.store.prune(session, batch=1):
                    pass
            left = {r["trace_id"] for r in await conn.fetch("SELECT trace_id FROM spans")}
            summaries = {r["trace_id"] for r in await conn.fetch("SELECT trace_id FROM traces")}
        finally:
            await conn.close()
        assert left == {new_trace} and summaries == {new_trace}


async def test_filters_find_the_denied_trace(postgres) -> None:
    async with running_store(postgres) as s:
        denied = await asyncio.to_thread(export_spans, s.url, "org-d")
        async with s.db.unit_of_work() as session:  # type: ignore[attr-defined]
            deny = await s.store.traces(session, "org-d", TraceQuery(decision="deny"), 10)
            allow = await s.store.traces(session, "org-d", TraceQuery(decision="allow"), 10)
            by_order = await s.store.traces(session, "org-d", TraceQuery(work_order_id="wo-1"), 10)
            later = await s.store.traces(
                session,
                "org-d",
                TraceQuery(started_from=datetime.now(UTC) + timedelta(minutes=1)),
                10,
            )
        assert [t.trace_id for t in deny] == [denied] == [t.trace_id for t in by_order]
        assert allow == [] and later == []


async def test_doorward_trace_prints_the_tree_by_trace_id_and_by_audit_event_id(postgres) -> None:
    from doorward_kit.audit_client import Outcome
    from services.traces.cli import run_trace
    from tests.integration.audit.harness import record, running_audit

    async with running_store(postgres) as s, running_audit(postgres) as audit:
        trace_id = await asyncio.to_thread(export_spans, s.url, "org-e")
        event = record("org-e", action="secret.reveal", outcome=Outcome.DENIED, trace_id=trace_id)
        await audit.append([event])
        traces_url = s.dsn
        for reference in (trace_id, event.id):
            lines: list[str] = []
            code = await asyncio.to_thread(
                run_trace, reference, traces_url, audit.admin_dsn, lines.append
            )
            assert code == 0, lines
            assert lines[0] == f"trace {trace_id}: 2 spans from doorward-secrets"
            assert lines[1].startswith("doorward-secrets POST /v1/reveals/{grant_id}")
            assert lines[2].startswith("  doorward-secrets doorward.secret.reveal")
            assert "doorward.decision=deny doorward.decision.reason=consumed" in lines[2]
        missing: list[str] = []
        code = await asyncio.to_thread(
            run_trace, "not-an-id", traces_url, audit.admin_dsn, missing.append
        )
        assert code == 1 and "neither a trace id" in missing[0]


async def test_an_organisations_own_shorter_retention_is_honoured(postgres) -> None:
    """traceDays of one organisation: its older traces are neither shown nor kept, another
    organisation's traces of the same age stay (the store-wide retention is the ceiling)."""
    async with running_store(postgres, traces_retention_days=30) as s:
        s.store.set_org_retention("org-short", 7)
        s.store.set_org_retention("org-long", 60)  # longer than the store's: the store decides
        short_old = await asyncio.to_thread(export_spans, s.url, "org-short")
        short_new = await asyncio.to_thread(export_spans, s.url, "org-short")
        other_old = await asyncio.to_thread(export_spans, s.url, "org-other")
        conn = await asyncpg.connect(s.dsn)
        try:
            for trace_id in (short_old, other_old):
                await conn.execute(
                    "UPDATE spans SET started_at = started_at - interval '10 days' "
                    "WHERE trace_id = $1",
                    trace_id,
                )
                await conn.execute(
                    "UPDATE traces SET started_at = started_at - interval '10 days', "
                    "ended_at = ended_at - interval '10 days' WHERE trace_id = $1",
                    trace_id,
                )
            async with s.db.unit_of_work() as session:  # type: ignore[attr-defined]
                listed = await s.store.traces(session, "org-short", TraceQuery(), 10)
                assert [t.trace_id for t in listed] == [short_new]
                assert await s.store.trace(session, "org-short", short_old) is None
                assert await s.store.trace(session, "org-other", other_old) is not None
                while await s.store.prune(session, batch=1) + await s.store.prune_orgs(
                    session, batch=1
                ):
                    pass
            left = {r["trace_id"] for r in await conn.fetch("SELECT trace_id FROM spans")}
            summaries = {r["trace_id"] for r in await conn.fetch("SELECT trace_id FROM traces")}
        finally:
            await conn.close()
        assert left == summaries == {short_new, other_old}
        with pytest.raises(Exception, match="days > 0"):
            s.store.set_org_retention("org-short", 0)


async def test_five_processes_exporting_the_same_traces_at_once_all_land(postgres) -> None:
    """Every process exports spans of the same traces at the same moment, each batch in its
    own order. Their summary upserts used to lock the trace rows in batch order and deadlock;
    PostgreSQL aborted one, the receiver answered 500 and the exporter dropped that batch for
    good (the e2e then saw a grant's trace without workorders). Every batch must land."""
    import random

    from tests.integration.traces.harness import otlp_json

    services = [f"doorward-{s}" for s in ("gateway", "workorders", "secrets", "audit", "identity")]
    trace_ids = [uuid.uuid4().hex for _ in range(60)]
    rng = random.Random(4711)
    codes: list[int] = []
    async with running_store(postgres) as s, httpx.AsyncClient(timeout=30) as client:

        async def export(service: str) -> None:
            order = rng.sample(trace_ids, len(trace_ids))
            spans = [{"trace_id": t, "span_id": uuid.uuid4().hex[:16], "name": "op"} for t in order]
            answer = await client.post(f"{s.url}/v1/traces", json=otlp_json(service, spans))
            codes.append(answer.status_code)

        for _ in range(8):
            await asyncio.gather(*(export(service) for service in services))
        conn = await asyncpg.connect(s.dsn)
        try:
            counts = await conn.fetch(
                "SELECT span_count, services FROM traces WHERE trace_id = ANY($1)", trace_ids
            )
        finally:
            await conn.close()
    assert codes == [200] * len(codes)
    assert len(counts) == len(trace_ids)
    assert {row["span_count"] for row in counts} == {8 * len(services)}
    assert all(sorted(row["services"]) == sorted(services) for row in counts)


async def test_a_store_that_cannot_write_answers_retryable_503(postgres) -> None:
    """The OTLP exporter drops a batch on 500 but retries it on 503: a database failure must
    be a 503 (with Retry-After), and its answer names no content of the spans."""
    from tests.integration.traces.harness import otlp_json

    async with running_store(postgres) as s, httpx.AsyncClient() as client:
        body = otlp_json(
            "doorward-secrets",
            [{"trace_id": uuid.uuid4().hex, "span_id": "ab" * 8, "name": CANARY}],
        )
        conn = await asyncpg.connect(s.dsn)
        try:
            # The store's own tables refuse writes for a moment (what a failing disk does).
            await conn.execute("ALTER TABLE spans RENAME TO spans_away")
            refused = await client.post(f"{s.url}/v1/traces", json=body)
            await conn.execute("ALTER TABLE spans_away RENAME TO spans")
        finally:
            await conn.close()
        stored = await client.post(f"{s.url}/v1/traces", json=body)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert CANARY not in refused.text
    assert stored.status_code == 200
