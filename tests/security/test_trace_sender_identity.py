"""T1 (issue 13): a span's service is the one its sender's certificate names.

Under mutual TLS the trace store's receiver knows who sent a request (the verified client
certificate's `spiffe://doorward/<svc>`). A process stating another service's `service.name`
(say secrets sending spans as audit, to put an access in audit's mouth or to hide its own among
another's) is refused, whole, for spans and metrics; the honest export still lands.
"""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fixtures.pki import ServicePki
from tests.integration.traces.harness import otlp_json, running_store

pytestmark = pytest.mark.integration


def client_context(folder: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    context.load_cert_chain(str(folder / "identity.pem"))
    return context


def metrics_body(service: str) -> dict[str, Any]:
    """One OTLP/JSON gauge point of `service`."""
    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "doorward_active_grants",
                                "gauge": {
                                    "dataPoints": [
                                        {"timeUnixNano": "1764460800000000000", "asDouble": 1.0}
                                    ]
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }


async def test_a_service_can_send_only_its_own_telemetry(postgres, tmp_path) -> None:
    pki = ServicePki(tmp_path / "tls")
    secrets = client_context(pki.folder("secrets"))
    async with running_store(postgres, pki=pki, traces_receiver_tls=True) as store:
        honest_trace, forged_trace, mixed_trace = (uuid.uuid4().hex for _ in range(3))

        def spans(service: str, trace_id: str) -> dict[str, Any]:
            return otlp_json(service, [{"trace_id": trace_id, "span_id": "1a" * 8, "name": "x"}])

        mixed = spans("doorward-secrets", mixed_trace)
        mixed["resourceSpans"] += spans("doorward-audit", mixed_trace)["resourceSpans"]
        async with httpx.AsyncClient(verify=secrets, base_url=store.url) as client:
            honest = await client.post("/v1/traces", json=spans("doorward-secrets", honest_trace))
            forged = await client.post("/v1/traces", json=spans("doorward-audit", forged_trace))
            half = await client.post("/v1/traces", json=mixed)
            own_metrics = await client.post("/v1/metrics", json=metrics_body("doorward-secrets"))
            forged_metrics = await client.post(
                "/v1/metrics", json=metrics_body("doorward-identity")
            )
        conn = await asyncpg.connect(store.dsn)
        try:
            stored = {
                r["trace_id"]: r["service"]
                for r in await conn.fetch("SELECT trace_id, service FROM spans")
            }
            metric_services = {
                r["service"] for r in await conn.fetch("SELECT service FROM metric_points")
            }
        finally:
            await conn.close()
    # The honest use works ...
    assert honest.status_code == 200 and own_metrics.status_code == 200
    assert stored.get(honest_trace) == "doorward-secrets"
    assert metric_services == {"doorward-secrets"}
    # ... and the forgery is refused whole: nothing of it (not even the honest half) is stored.
    assert forged.status_code == 403 and half.status_code == 403
    assert forged_metrics.status_code == 403
    assert "secrets's certificate" in forged.json()["error"]["message"]
    assert forged_trace not in stored and mixed_trace not in stored
