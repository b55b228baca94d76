"""GET /metrics: the contract's metrics, exemplars carrying the trace id, bounded labels, and
only for the configured scrapers."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from doorward_kit.http import add_metrics_route
from doorward_kit.metrics import SECRET_REVEALS, VAULT_REQUEST_SECONDS, render

pytestmark = pytest.mark.unit


def _app(networks: str) -> FastAPI:
    app = FastAPI()
    add_metrics_route(app, networks)
    return app


async def _get(app: FastAPI, client_host: str, accept: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(client_host, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/metrics", headers={"accept": accept} if accept else {})


async def test_scrapers_inside_the_allowed_networks_get_the_metrics() -> None:
    SECRET_REVEALS.add(decision="deny", reason="consumed")
    answer = await _get(_app("127.0.0.0/8,10.1.0.0/16"), "10.1.2.3")
    assert answer.status_code == 200
    assert 'doorward_secret_reveals_total{decision="deny",reason="consumed"}' in answer.text
    assert "doorward_gateway_request_duration_seconds" in answer.text


async def test_anyone_else_is_refused() -> None:
    answer = await _get(_app("127.0.0.0/8"), "203.0.113.9")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "FORBIDDEN"


def test_openmetrics_carries_the_trace_id_as_exemplar() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("reveal") as span:
        VAULT_REQUEST_SECONDS.observe(0.004, operation="unwrap")
        trace_id = format(span.get_span_context().trace_id, "032x")
    body, content_type = render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert f'trace_id="{trace_id}"' in body.decode()


def test_labels_are_bounded_words_never_free_text() -> None:
    SECRET_REVEALS.add(decision="deny", reason="a value: door-code-canary with spaces")
    body, _ = render("")
    # (a digit canary could appear in a sample's timestamp: a word cannot)
    assert "door-code-canary" not in body.decode()
    assert 'reason="other"' in body.decode()
    with pytest.raises(ValueError):
        SECRET_REVEALS.add(decision="deny")
