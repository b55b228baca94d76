"""Telemetry benchmark (issue 13), one run, real everything: embedded PostgreSQL, dev OpenBao,
the real secrets service over real HTTP + gRPC (workorders and audit are in-process servicers,
as in secrets_bench), the real trace store as its own process (`python -m services.traces`).

Reports:
  1. reveal latency (IssueGrant + POST reveal, sequential) p50/p99 with spans exported to the
     trace store through the standard OTLP exporter (batching, the kit's redaction) and without
     export (spans still created, as with OTEL_TRACES_EXPORTER=none), in alternating blocks so
     both see the same machine;
  2. the trace store's ingest rate: spans a second stored, from concurrent OTLP/HTTP protobuf
     exports of realistic spans (counted in its database afterwards).

Both over the receiver's mutual TLS, as `doorward up` runs it.

    .venv/bin/python -m bench.telemetry_bench [--samples 300] [--blocks 6]
        [--ingest-spans 100000] [--batch 512] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from deploy.embedded import EmbeddedOpenBao, EmbeddedPostgres, free_port_pair, provision_vault
from doorward_kit import telemetry
from doorward_kit.net import free_port
from doorward_kit.telemetry import RedactingExporter, otlp_session
from tests.fixtures.pki import ServicePki


class Switch(SpanProcessor):
    """Forwards finished spans to `inner` only while `on`: one provider for the whole run."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.on = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on:
            self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, values: Sequence[float]) -> str:
    return (
        f"  {name:<28} p50 {pct(values, 0.5) * 1000:7.2f} ms   "
        f"p99 {pct(values, 0.99) * 1000:7.2f} ms   (n={len(values)})"
    )


def start_store(
    pg: EmbeddedPostgres, pki: ServicePki, log: Path
) -> tuple[subprocess.Popen, str, str]:
    db_url = pg.create_database("traces_bench")
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOORWARD_", "OTEL_"))}
    env.update(
        {
            "DOORWARD_TRACES_DB_URL": db_url,
            "DOORWARD_TRACES_HTTP_PORT": str(http_port),
            "DOORWARD_TRACES_GRPC_PORT": str(grpc_port),
            "DOORWARD_TLS_DIR": str(pki.folder("traces")),
            "DOORWARD_TRACES_MAX_BODY_BYTES": str(64_000_000),
            "OTEL_TRACES_EXPORTER": "none",
        }
    )
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.traces"], env=env, stdout=out, stderr=out
        )
    url = f"https://127.0.0.1:{http_port}"
    folder = pki.folder("gateway")
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    context.load_cert_chain(str(folder / "identity.pem"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the trace store exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1, verify=context).status_code == 200:
                return proc, url, pg.admin_url("traces_bench")
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the trace store was not ready within 60 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def reveal_latency(h: Any, switch: Switch, samples: int, blocks: int) -> None:
    org_id = str(uuid.uuid4())
    ref_id, site_id = await h.new_secret(org_id, "bench-" + uuid.uuid4().hex)
    timings: dict[bool, list[float]] = {False: [], True: []}
    per_block = max(1, samples // blocks)

    async def one() -> float:
        job = await h.job(org_id, ref_id, site_id)
        t0 = time.perf_counter()
        grant = await h.grant(job, ref_id)
        response = await h.reveal(grant, job.token)
        elapsed = time.perf_counter() - t0
        assert response.status_code == 200, response.text
        return elapsed

    for _ in range(20):  # warm-up, exporting
        switch.on = True
        await one()
    for block in range(blocks * 2):
        switch.on = block % 2 == 1
        for _ in range(per_block):
            timings[switch.on].append(await one())
    switch.on = False
    print("reveal latency (IssueGrant + POST reveal, one client, sequential)")
    print(line("without export", timings[False]))
    print(line("with export to the store", timings[True]))
    print(
        f"  export cost: p50 {(pct(timings[True], 0.5) - pct(timings[False], 0.5)) * 1000:+.2f} ms,"
        f" p99 {(pct(timings[True], 0.99) - pct(timings[False], 0.99)) * 1000:+.2f} ms"
    )


def ingest_bodies(total: int, batch: int) -> list[bytes]:
    """OTLP protobuf bodies of `batch` spans each: the shape of a reveal's spans (decision
    attributes, an org id, a URL), 8 spans to a trace."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    now = time.time_ns()
    bodies = []
    for start in range(0, total, batch):
        spans = []
        for i in range(start, min(total, start + batch)):
            trace_id = (i // 8 + 1).to_bytes(16, "big")
            spans.append(
                PbSpan(
                    trace_id=trace_id,
                    span_id=(i + 1).to_bytes(8, "big"),
                    parent_span_id=b"" if i % 8 == 0 else (i - i % 8 + 1).to_bytes(8, "big"),
                    name="doorward.secret.reveal" if i % 8 == 3 else "POST /v1/reveals/{id}",
                    kind=PbSpan.SPAN_KIND_SERVER,
                    start_time_unix_nano=now + i * 1000,
                    end_time_unix_nano=now + i * 1000 + 2_000_000,
                    attributes=[
                        kv("doorward.org.id", "org-bench"),
                        kv("doorward.decision", "deny" if i % 16 == 3 else "allow"),
                        kv("doorward.decision.reason", "not_assigned"),
                        kv("doorward.work_order.id", str(uuid.UUID(int=i // 8))),
                        kv("http.url", "http://127.0.0.1:4004/v1/reveals/x"),
                    ],
                )
            )
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource={"attributes": [kv("service.name", "doorward-secrets")]},
                    scope_spans=[ScopeSpans(spans=spans)],
                )
            ]
        )
        bodies.append(request.SerializeToString())
    return bodies


async def ingest_rate(
    url: str, dsn: str, pki: ServicePki, total: int, batch: int, concurrency: int
) -> None:
    bodies = ingest_bodies(total, batch)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"content-type": "application/x-protobuf"}

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            answer = await client.post(url + "/v1/traces", content=body, headers=headers)
            assert answer.status_code == 200, answer.text

    folder = pki.folder("gateway")
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    context.load_cert_chain(str(folder / "identity.pem"))
    async with httpx.AsyncClient(timeout=120, verify=context, trust_env=False) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM spans WHERE org_id = 'org-bench'")
        traces = await conn.fetchval("SELECT count(*) FROM traces WHERE org_id = 'org-bench'")
    finally:
        await conn.close()
    print(
        f"trace store ingest: {stored} spans ({traces} traces) in {elapsed:.2f} s = "
        f"{stored / elapsed:,.0f} spans/s  (OTLP/HTTP protobuf, {batch} spans a request, "
        f"{concurrency} concurrent senders)"
    )


async def main(args: argparse.Namespace) -> None:
    # Importing the harness installs the kit's tracer provider and instrumentations.
    from tests.integration.secrets.conftest import running_secrets

    root = Path(tempfile.mkdtemp(prefix="doorward-bench-telemetry-"))
    pg = EmbeddedPostgres(root / "pg")
    bao = EmbeddedOpenBao(root / "bao", free_port_pair(), dev=True)
    store = None
    try:
        pg.start()
        bao.start()
        pki = ServicePki(root / "tls")
        store, url, dsn = start_store(pg, pki, root / "traces.log")
        # One provider for the run, as setup_telemetry builds it: the real OTLP exporter behind
        # the kit's redaction and a batch processor, switched on and off between blocks.
        existing = trace.get_tracer_provider()
        provider = (
            existing
            if isinstance(existing, TracerProvider)  # the secrets harness set one up already
            else TracerProvider(resource=Resource.create({"service.name": "doorward-secrets"}))
        )
        # As `doorward up` runs it: HTTPS with the process's certificate (mutual TLS).
        client = pki.folder("secrets")
        exporter = RedactingExporter(
            OTLPSpanExporter(
                endpoint=url + "/v1/traces",
                certificate_file=str(client / "ca.pem"),
                client_certificate_file=str(client / "identity.pem"),
                client_key_file=str(client / "identity.pem"),
                session=otlp_session(),
            )
        )
        switch = Switch(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        provider.add_span_processor(switch)
        if provider is not existing:
            trace.set_tracer_provider(provider)
            telemetry._instrument_libraries()
        creds = provision_vault(bao.client())
        async with running_secrets(
            db_url=pg.create_database("secrets_bench"),
            vault_addr=bao.addr,
            role_id=creds.role_id,
            secret_id=creds.secret_id,
            secrets_max_open_grants=1_000_000,
            secrets_grant_rate_limit=1_000_000,
            secrets_reveal_rate_limit=1_000_000,
        ) as h:
            await reveal_latency(h, switch, args.samples, args.blocks)
        provider.force_flush()
        await ingest_rate(url, dsn, pki, args.ingest_spans, args.batch, args.concurrency)
    finally:
        if store is not None:
            stop(store)
        bao.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--ingest-spans", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
