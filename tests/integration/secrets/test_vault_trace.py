"""Vault in the same trace: the secrets service sends `traceparent` to OpenBao, provisioning
makes it an audited request header, so OpenBao's own audit line of a reveal's unwrap names the
reveal's trace. Against a persistent OpenBao with its file audit device, as `make up` runs it."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deploy.embedded import EmbeddedOpenBao, free_port_pair, provision_vault
from doorward_kit.telemetry import setup_telemetry
from tests.integration.secrets.conftest import SecretsHarness, running_secrets

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def audited(
    postgres: Any,
) -> AsyncIterator[tuple[SecretsHarness, EmbeddedOpenBao, InMemorySpanExporter]]:
    setup_telemetry("secrets-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    root_dir = Path(tempfile.mkdtemp(prefix="doorward-test-bao-trace-"))
    server = EmbeddedOpenBao(root_dir / "openbao", free_port_pair())
    try:
        server.start()
        creds = provision_vault(server.client())
        async with running_secrets(
            db_url=postgres.fresh_database("secrets_vault_trace"),
            vault_addr=server.addr,
            role_id=creds.role_id,
            secret_id=creds.secret_id,
        ) as harness:
            yield harness, server, spans
    finally:
        spans.clear()
        server.stop()
        shutil.rmtree(root_dir, ignore_errors=True)


def _audit_lines(server: EmbeddedOpenBao) -> list[dict[str, Any]]:
    lines = server.audit_log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


async def test_openbaos_audit_line_of_the_unwrap_names_the_reveals_trace(audited: Any) -> None:
    h, server, spans = audited
    org_id = "3b7f0c52-9d61-4c1e-8a53-5a1d7c0e2f11"
    ref_id, site_id = await h.new_secret(org_id, "vault-trace-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    assert (await h.reveal(grant, job.token)).status_code == 200

    reveal = next(s for s in spans.get_finished_spans() if s.name == "doorward.secret.reveal")
    trace_id = format(reveal.context.trace_id, "032x")
    unwraps = [
        entry
        for entry in _audit_lines(server)
        if entry.get("type") == "request"
        and entry.get("request", {}).get("path") == "sys/wrapping/unwrap"
    ]
    headers = [entry["request"].get("headers", {}).get("traceparent", []) for entry in unwraps]
    # The header is audited in clear (a trace id is no secret) and names the reveal's trace.
    assert any(trace_id in value for values in headers for value in values), headers
    # Requests of other traces (the upload's unwrap of its write metadata) name theirs, not ours.
    assert all(values for values in headers)


async def test_provisioning_keeps_the_pseudonym_key_and_audits_traceparent(openbao: Any) -> None:
    """Every provisioning run (also one that keeps its AppRole secret_id) makes sure of both;
    the key is created once and never replaced (every stored pseudonym would change)."""
    client = openbao.client()
    path = "/v1/doorward-kv/data/telemetry/pseudonym-key"
    first = client.adapter.get(path)["data"]["data"]["key"]
    client.adapter.delete("/v1/sys/config/auditing/request-headers/traceparent")
    provision_vault(client, secret_id=openbao.secret_id)
    assert client.adapter.get(path)["data"]["data"]["key"] == first
    headers = client.adapter.get("/v1/sys/config/auditing/request-headers")["data"]["headers"]
    assert headers["traceparent"] == {"hmac": False}
