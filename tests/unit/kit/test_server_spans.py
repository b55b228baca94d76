"""One server span per HTTP request, not one per ASGI message: every span is exported and
stored by the trace store, and the per-message ones ("http receive", "http send") said nothing
the server span does not (issue 11: they were three of a subgraph call's spans)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from doorward_kit.telemetry import instrument_fastapi

pytestmark = pytest.mark.unit


async def test_a_request_is_one_server_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI()

    @app.post("/graphql")
    async def graphql() -> dict[str, str]:
        return {"data": "ok"}

    instrument_fastapi(app, tracer_provider=provider)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://subgraph") as client:
        assert (await client.post("/graphql", json={})).status_code == 200
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["POST /graphql"], names
