"""One reveal and one refused reveal through the real export path into the real trace store:
the redacting OTLP exporter every process uses, the store's receiver, its database. The stored
decision spans keep the convention (decision, reason, pseudonym, ids, audit event, org) and
the trace store holds no value, token or user id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from doorward_kit.pseudonym import pseudonym
from doorward_kit.telemetry import RedactingExporter
from tests.integration.secrets.conftest import SecretsHarness
from tests.integration.traces.test_trace_store import running_store

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class Switch(SpanProcessor):
    """Forwards to `inner` only while on: the SDK cannot remove a processor from the shared
    provider, and later tests must not export to a store that has stopped. Only decision and
    Vault spans: the store runs in this process too, and its own SQL and HTTP spans would
    otherwise be exported to itself, forever."""

    def __init__(self) -> None:
        self.inner: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self.inner is not None and span.name.startswith(("doorward.", "vault.")):
            self.inner.on_end(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis) if self.inner is not None else True


_SWITCH: list[Switch] = []


@pytest.fixture
def switch(secrets_svc: SecretsHarness) -> Iterator[Switch]:
    if not _SWITCH:
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        _SWITCH.append(Switch())
        provider.add_span_processor(_SWITCH[0])
    yield _SWITCH[0]
    _SWITCH[0].inner = None


async def test_decision_spans_land_in_the_trace_store(
    postgres: Any, secrets_svc: SecretsHarness, switch: Switch, org_id: str
) -> None:
    h = secrets_svc
    canary = "trace-store-canary-8812"
    async with running_store(postgres) as store:
        # Batch export runs in its own thread: the store answers in this event loop.
        processor = BatchSpanProcessor(
            RedactingExporter(OTLPSpanExporter(endpoint=f"{store.url}/v1/traces"))
        )
        switch.inner = processor
        try:
            ref_id, site_id = await h.new_secret(org_id, canary)
            job = await h.job(org_id, ref_id, site_id)
            grant = await h.grant(job, ref_id)
            assert (await h.reveal(grant, job.token)).status_code == 200
            assert (await h.reveal(grant, job.token)).status_code == 410
            denied = await h.audit.wait_for(org_id, "secret.reveal.denied", reason="used")
            await asyncio.sleep(0.2)
            assert await asyncio.to_thread(processor.force_flush)
        finally:
            switch.inner = None
            await asyncio.to_thread(processor.shutdown)

        conn = await asyncpg.connect(store.dsn)
        try:
            rows = await conn.fetch(
                "SELECT * FROM spans WHERE name = 'doorward.secret.reveal' AND org_id = $1",
                org_id,
            )
            vault_rows = await conn.fetch("SELECT * FROM spans WHERE name = 'vault.unwrap'")
            dump = json.dumps(
                [dict(r) for r in await conn.fetch("SELECT * FROM spans")], default=str
            )
        finally:
            await conn.close()
    by_decision = {r["decision"]: r for r in rows}
    assert set(by_decision) == {"allow", "deny"}
    deny = by_decision["deny"]
    assert deny["reason"] == "consumed"
    assert deny["status"] in ("UNSET", "0", "STATUS_CODE_UNSET") or "ERROR" not in deny["status"]
    assert deny["actor_pseudo_id"] == pseudonym(job.user_id)
    assert deny["work_order_id"] == job.work_order_id
    assert deny["secret_ref_id"] == ref_id
    attributes = json.loads(deny["attributes"])
    assert attributes["doorward.audit.event_id"] == denied.id
    assert attributes["doorward.grant.id"] == grant.id
    allow = by_decision["allow"]
    assert allow["reason"] == "in_window"
    # Each reveal is its own trace, and the Vault unwrap is in the allowed one.
    assert deny["trace_id"] != allow["trace_id"]
    assert allow["trace_id"] in {r["trace_id"] for r in vault_rows}
    assert canary not in dump
    assert grant.reveal_token not in dump
    assert job.user_id not in dump
