"""Doorward's metrics, defined once: Prometheus (`GET /metrics` on every process's HTTP port,
with trace-id exemplars) and OTLP (to the trace store or a collector) from the same calls.

Why two libraries: prometheus_client renders OpenMetrics exemplars (a sample's trace id, so a
dashboard's spike leads to a trace), which OpenTelemetry's Prometheus bridge does not; the
OpenTelemetry meter feeds the standard OTLP exporter. Each Doorward metric records into both.

Labels are fixed, low-cardinality words (decision, reason, operation, service): never an id,
a name or a value (the canary tests read /metrics too).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import prometheus_client
from opentelemetry import metrics
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from doorward_kit.telemetry import current_trace_id

REGISTRY = CollectorRegistry(auto_describe=True)
_meter = metrics.get_meter("doorward")

# Seconds: a reveal is ~10-50 ms, a Vault call ~1-5 ms, a gateway request 5-500 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _exemplar() -> dict[str, str] | None:
    trace_id = current_trace_id()
    return {"trace_id": trace_id} if trace_id else None


class Counter:
    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self._prom = prometheus_client.Counter(name, description, labels, registry=REGISTRY)
        self._otel = _meter.create_counter(name.replace("_", "."), description=description)

    def add(self, amount: float = 1.0, **labels: str) -> None:
        values = _label_values(self.labels, labels)
        child = self._prom.labels(*values) if self.labels else self._prom
        child.inc(amount, exemplar=_exemplar())
        self._otel.add(amount, dict(zip(self.labels, values, strict=True)))


class Histogram:
    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self._prom = prometheus_client.Histogram(
            name, description, labels, registry=REGISTRY, buckets=LATENCY_BUCKETS
        )
        self._otel = _meter.create_histogram(
            name.replace("_", "."), unit="s", description=description
        )

    def observe(self, seconds: float, **labels: str) -> None:
        values = _label_values(self.labels, labels)
        child = self._prom.labels(*values) if self.labels else self._prom
        child.observe(seconds, exemplar=_exemplar())
        self._otel.record(seconds, dict(zip(self.labels, values, strict=True)))

    @contextmanager
    def time(self, **labels: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started, **labels)


class Gauge:
    def __init__(self, name: str, description: str) -> None:
        self._prom = prometheus_client.Gauge(name, description, registry=REGISTRY)
        self._value = 0.0
        self._otel = _meter.create_observable_gauge(
            name.replace("_", "."), callbacks=[self._observe], description=description
        )

    def set(self, value: float) -> None:
        self._value = value
        self._prom.set(value)

    def _observe(self, _options: Any) -> list[metrics.Observation]:
        return [metrics.Observation(self._value)]


def _label_values(names: tuple[str, ...], given: Mapping[str, str]) -> list[str]:
    if set(given) != set(names):
        raise ValueError(f"labels must be exactly {names}, got {tuple(sorted(given))}")
    # Bounded words only: a value that is not a short identifier is recorded as "other".
    return [
        v if v.replace("_", "").replace(".", "").isalnum() and len(v) <= 48 else "other"
        for v in (given[n] for n in names)
    ]


# The contract's metrics (issue 13); each process records the ones it owns.
SECRET_REVEALS = Counter(
    "doorward_secret_reveals", "Reveal attempts by decision and reason", ("decision", "reason")
)
SECRET_GRANTS = Counter(
    "doorward_secret_grants", "Grant requests by decision and reason", ("decision", "reason")
)
# Must stay 0: a reveal that succeeded for a grant already used (Vault's single-use wrapping
# makes it impossible; counting it keeps the invariant visible).
SECRET_DOUBLE_REVEALS = Counter(
    "doorward_secret_double_reveals", "Reveals that succeeded for an already used grant", ()
)
# Per technician pseudonym (enduser.pseudo.id, never a user id): the denial ratio alert.
ACCESS_DECISIONS_BY_ACTOR = Counter(
    "doorward_access_decisions_by_actor",
    "Access decisions per pseudonymous actor",
    ("decision", "actor"),
)
# Every secrets replica's sweeper counts the whole table: dashboards take max(), never sum().
ACTIVE_GRANTS = Gauge("doorward_secret_grants_active", "Grants issued and not yet used or ended")
VAULT_REQUEST_SECONDS = Histogram(
    "doorward_vault_request_duration_seconds", "Vault API calls by operation", ("operation",)
)
AUDIT_WRITE_FAILURES = Counter(
    "doorward_audit_write_failures", "Audit events that could not be written", ("path",)
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "doorward_gateway_request_duration_seconds",
    "Gateway requests by operation name",
    ("operation",),
)


def render(accept: str) -> tuple[bytes, str]:
    """The /metrics body: OpenMetrics (with exemplars) when the scraper asks for it, else the
    classic Prometheus text format."""
    if "application/openmetrics-text" in accept:
        return openmetrics_latest(REGISTRY), OPENMETRICS
    return prometheus_client.generate_latest(REGISTRY), prometheus_client.CONTENT_TYPE_LATEST


def setup_metrics_export(service_name: str) -> None:
    """OTLP metric export by the standard variables (OTEL_METRICS_EXPORTER, the OTLP endpoint);
    nothing when none is set. Idempotent enough: the SDK refuses a second global provider."""
    choice = os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if choice == "none" or not (choice == "otlp" or endpoint):
        return
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from doorward_kit.telemetry import otlp_session

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(session=otlp_session()), export_interval_millis=15_000
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": f"doorward-{service_name}"}),
    )
    metrics.set_meter_provider(provider)
