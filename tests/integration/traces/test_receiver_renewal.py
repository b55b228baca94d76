"""Spans keep arriving across a certificate renewal (issue 13, the flaky traces e2e).

`doorward up` renews every process's certificate at 2/3 of its lifetime. Both ends of the trace
store's mutual-TLS receiver must follow: the exporter (the standard OTLP/HTTP exporter, built
from the OTEL_EXPORTER_OTLP_* variables as every Doorward process builds it) presents its
renewed certificate, and the store presents its own renewed one, once the first ones expired.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from doorward_kit.telemetry import RedactingExporter, _exporter_from_env
from tests.fixtures.pki import ServicePki
from tests.integration.traces.harness import running_store

pytestmark = pytest.mark.integration

SHORT = 4.0  # seconds: the short-lived certificates of both ends expire during the test


def not_after(folder: Path) -> dt.datetime:
    pem = (folder / "identity.pem").read_bytes()
    start = pem.index(b"-----BEGIN CERTIFICATE-----")
    return x509.load_pem_x509_certificate(pem[start:]).not_valid_after_utc


async def stored(dsn: str, trace_ids: list[str], timeout: float = 20.0) -> set[str]:
    """The trace ids of `trace_ids` the store holds, once all are in (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT trace_id FROM traces WHERE trace_id = ANY($1)", trace_ids
            )
        finally:
            await conn.close()
        found = {r["trace_id"] for r in rows}
        if found == set(trace_ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def served_serial(port: int, client: Path) -> int:
    """The serial number of the certificate the receiver presents now (a client certificate
    of the same CA is presented, as the receiver requires one)."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(client / "ca.pem"))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificate is looked at, not trusted
    context.load_cert_chain(str(client / "identity.pem"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial(folder: Path) -> int:
    pem = (folder / "identity.pem").read_bytes()
    start = pem.index(b"-----BEGIN CERTIFICATE-----")
    return x509.load_pem_x509_certificate(pem[start:]).serial_number


async def test_spans_reach_the_store_across_a_renewal_of_both_ends(
    postgres, tmp_path, monkeypatch
) -> None:
    pki = ServicePki(tmp_path / "tls")
    client, server = pki.folder("secrets"), pki.folder("traces")
    async with running_store(postgres, pki=pki, traces_receiver_tls=True) as store:
        port = int(store.url.rsplit(":", 1)[1])
        # What `doorward up` gives a process (deploy/supervisor.py _trace_store_client_env).
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", store.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(client / "ca.pem"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(client / "identity.pem"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(client / "identity.pem"))
        exporter = _exporter_from_env()
        assert exporter is not None
        provider = TracerProvider(resource=Resource.create({"service.name": "doorward-secrets"}))
        provider.add_span_processor(
            BatchSpanProcessor(RedactingExporter(exporter), schedule_delay_millis=200)
        )
        tracer = provider.get_tracer("renewal")

        def span() -> str:
            with tracer.start_as_current_span("doorward.secret.reveal") as current:
                current.set_attribute("doorward.org.id", "org-renewal")
                return format(current.get_span_context().trace_id, "032x")

        async def renew(ttl: float) -> None:
            """What the supervisor does (new key and certificate, same CA, both ends). The
            receiver presents its new certificate from the very next handshake on: a server
            that reloaded on a timer served the old one, past its end, for seconds."""
            pki.ca.install(client, "secrets", ttl=ttl)
            pki.ca.install(server, "traces", ttl=ttl)
            assert await asyncio.to_thread(served_serial, port, client) == serial(server)

        try:
            first = [span()]
            assert await stored(store.dsn, first) == set(first)
            await renew(SHORT)
            short = [span()]
            assert await stored(store.dsn, short) == set(short)
            expiry = max(not_after(client), not_after(server))
            await renew(600)
            # The short-lived certificates of both ends run out; spans keep arriving, on the
            # exporter's pooled connection and on new ones.
            while dt.datetime.now(dt.UTC) <= expiry:
                await asyncio.sleep(0.1)
            after = []
            for _ in range(4):
                after.append(span())
                await asyncio.sleep(0.5)
            assert await stored(store.dsn, after, timeout=5) == set(after)
        finally:
            await asyncio.to_thread(provider.shutdown)
