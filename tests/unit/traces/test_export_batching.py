"""Every process's span export (doorward_kit.telemetry.batch_processor): bounded, in batches of
at most 512 spans, a full batch sent at once; the standard OTEL_BSP_* variables still win."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from doorward_kit.telemetry import (
    BSP_MAX_EXPORT_BATCH_SIZE,
    BSP_MAX_QUEUE_SIZE,
    RedactingExporter,
    batch_processor,
)

pytestmark = pytest.mark.unit


class Recorder(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(len(spans))
        self.exported.set()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _bounds(processor: object) -> tuple[int, int]:
    inner = processor._batch_processor  # type: ignore[attr-defined]
    return inner._max_queue_size, inner._max_export_batch_size


def test_defaults_are_bounded_and_the_environment_wins(monkeypatch) -> None:
    for name in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    processor = batch_processor(Recorder())
    assert _bounds(processor) == (BSP_MAX_QUEUE_SIZE, BSP_MAX_EXPORT_BATCH_SIZE) == (8192, 512)
    processor.shutdown()
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50")
    processor = batch_processor(Recorder())
    assert _bounds(processor) == (100, 50)
    processor.shutdown()
    # unreadable or non-positive: the defaults; a batch never larger than the queue
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0")
    processor = batch_processor(Recorder())
    assert _bounds(processor) == (8192, 512)
    processor.shutdown()
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    processor = batch_processor(Recorder())
    assert _bounds(processor) == (64, 64)
    processor.shutdown()


def test_spans_leave_in_full_batches_without_waiting_for_the_schedule(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # the schedule alone: never
    recorder = Recorder()
    provider = TracerProvider()
    provider.add_span_processor(batch_processor(RedactingExporter(recorder)))
    tracer = provider.get_tracer("t")
    for n in range(512):
        with tracer.start_as_current_span(f"s{n}"):
            pass
    # a full batch wakes the exporter at once
    assert recorder.exported.wait(10), "a full batch was not sent before the schedule"
    for n in range(600):
        with tracer.start_as_current_span(f"t{n}"):
            pass
    provider.force_flush()
    assert sum(recorder.batches) == 1112
    assert max(recorder.batches) <= 512 and recorder.batches[0] == 512
    provider.shutdown()
