"""Runs the real trace store in the test's event loop: real PostgreSQL, its OTLP/HTTP receiver
and its mutual-TLS gRPC read API on free ports; tokens from TestTokenIssuer (no identity)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doorward_kit.net import free_port
from doorward_kit.runner import serving
from doorward_kit.settings import StackSettings
from services.traces.__main__ import build_parts
from services.traces.service import TraceStore
from services.traces.settings import TracesSettings
from tests.fixtures.pki import ServicePki
from tests.fixtures.tokens import TestTokenIssuer


@dataclass
class Store:
    url: str  # the OTLP/HTTP receiver
    dsn: str  # plain asyncpg DSN of the superuser, the store's database
    db: Any
    store: TraceStore
    grpc_target: str
    grpc_port: int
    pki: ServicePki
    issuer: TestTokenIssuer


@contextlib.asynccontextmanager
async def running_store(
    postgres,
    *,
    pki: ServicePki | None = None,
    issuer: TestTokenIssuer | None = None,
    **overrides: Any,
) -> AsyncIterator[Store]:
    dbname = f"traces_{uuid.uuid4().hex[:12]}"
    db_url = postgres.create_database(dbname)
    http_port, grpc_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="doorward-traces-"))
    pki = pki or ServicePki(tmp / "tls")
    issuer = issuer or TestTokenIssuer()
    stack = StackSettings(
        traces_http_port=http_port, traces_grpc_port=grpc_port, tls_dir=pki.folder("traces")
    )
    # Plain HTTP unless a test asks for the receiver's mutual TLS (traces_receiver_tls=True).
    overrides.setdefault("traces_receiver_tls", False)
    settings = TracesSettings(traces_db_url=db_url, **overrides)
    parts, db, store = await build_parts(stack, settings, verifier=issuer.verifier())
    parts.background = []  # retention is driven by the tests
    try:
        async with serving(parts, "traces-test"):
            yield Store(
                url=f"{'https' if settings.traces_receiver_tls else 'http'}://127.0.0.1:{http_port}",
                dsn=postgres.server.admin_url(dbname),
                db=db,
                store=store,
                grpc_target=f"127.0.0.1:{grpc_port}",
                grpc_port=grpc_port,
                pki=pki,
                issuer=issuer,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def otlp_json(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """An OTLP/HTTP JSON export body of one process (`service.name` = `service`). Each span:
    trace_id, span_id, name, optional parent, attributes (str values), offset_ms, duration_ms,
    status (0 unset, 1 ok, 2 error)."""
    from datetime import UTC, datetime

    now = int(datetime.now(UTC).timestamp() * 1e9)
    out = []
    for span in spans:
        start = now + int(span.get("offset_ms", 0) * 1e6)
        out.append(
            {
                "traceId": span["trace_id"],
                "spanId": span["span_id"],
                "parentSpanId": span.get("parent", ""),
                "name": span["name"],
                "kind": span.get("kind", 2),
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(start + int(span.get("duration_ms", 2) * 1e6)),
                "attributes": [
                    {"key": k, "value": {"stringValue": v}}
                    for k, v in span.get("attributes", {}).items()
                ],
                "status": {"code": span.get("status", 0)},
            }
        )
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"spans": out}],
            }
        ]
    }
