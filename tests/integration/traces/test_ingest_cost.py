"""What an OTLP export costs the trace store, and that the cheap path stores the same thing.

An export is one SQL statement of one text whatever its size (spans and their traces' summary
rows together), sent without BEGIN/COMMIT; the summaries it keeps (organisation, first start,
last end, services, span count) are what the spans say, also across exports, repeats and
processes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.traces.repository import CONFLICT_ORG
from tests.fixtures.round_trips import simple_statements, statements_of
from tests.integration.traces.harness import otlp_json, running_store

pytestmark = pytest.mark.integration


def _spans(trace_ids: list[str], per_trace: int, **attributes: str) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": trace_id,
            "span_id": uuid.uuid4().hex[:16],
            "name": f"op {n}",
            "attributes": dict(attributes),
            "offset_ms": n,
            "duration_ms": 2,
        }
        for trace_id in trace_ids
        for n in range(per_trace)
    ]


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    answer = await client.post(f"{url}/v1/traces", json=body)
    assert answer.status_code == 200, answer.text


async def test_an_export_is_one_statement_of_one_text_without_a_transaction(postgres) -> None:
    async with running_store(postgres) as s, httpx.AsyncClient() as client:
        engine = s.db.engine  # type: ignore[attr-defined]
        # The first checkout of the pool may ping; what follows is the steady state.
        await _post(client, s.url, otlp_json("doorward-gateway", _spans([uuid.uuid4().hex], 1)))
        texts: list[str] = []
        for size in (2, 40):
            trace_ids = [uuid.uuid4().hex for _ in range(size // 2)]
            body = otlp_json(
                "doorward-workorders", _spans(trace_ids, 2, **{"doorward.org.id": "o"})
            )
            with statements_of(engine) as sql, simple_statements(engine) as simple:
                await _post(client, s.url, body)
            assert len(sql) == 1, sql
            assert simple == []  # no BEGIN, no COMMIT, no ping: the statement is all
            texts.append(sql[0])
        assert texts[0] == texts[1]  # the same text for 2 and 40 spans: prepared once
        assert "unnest" in texts[0] and "INSERT INTO traces" in texts[0]
        conn = await asyncpg.connect(s.dsn)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM spans")
            summaries = await conn.fetchval("SELECT count(*) FROM traces")
        finally:
            await conn.close()
        assert (stored, summaries) == (1 + 2 + 40, 1 + 1 + 20)


async def test_summaries_say_what_their_spans_say_across_exports_and_repeats(postgres) -> None:
    """Organisation, first start, last end, services and count per trace: from one export,
    merged with a second process's export, unchanged by a repeated export (an exporter's
    retry), and a trace whose spans name two organisations belongs to nobody."""
    ours, planted = uuid.uuid4().hex, uuid.uuid4().hex
    first = _spans([ours], 3, **{"doorward.org.id": "org-a"})  # starts at +0, +1, +2 ms
    first[1]["duration_ms"] = 50  # the last end: +1 + 50 ms
    second = _spans([ours], 2)  # no organisation named: keeps org-a
    second[0]["offset_ms"] = -60_000  # the first start (a minute before: bodies share no clock)
    honest = _spans([planted], 1, **{"doorward.org.id": "org-a"})
    foreign = _spans([planted], 1, **{"doorward.org.id": "org-b"})
    async with running_store(postgres) as s, httpx.AsyncClient() as client:
        body = otlp_json("doorward-gateway", first + honest)
        await _post(client, s.url, body)
        await _post(client, s.url, otlp_json("doorward-secrets", second + foreign))
        await _post(client, s.url, body)  # a retry: nothing new
        conn = await asyncpg.connect(s.dsn)
        try:
            rows = {
                r["trace_id"]: r
                for r in await conn.fetch(
                    "SELECT * FROM traces WHERE trace_id = ANY($1)", [ours, planted]
                )
            }
            spans = await conn.fetch(
                "SELECT started_at, duration_us FROM spans WHERE trace_id = $1", ours
            )
        finally:
            await conn.close()
    summary = rows[ours]
    assert summary["span_count"] == 5 and len(spans) == 5
    assert summary["org_id"] == "org-a"
    assert sorted(summary["services"]) == ["doorward-gateway", "doorward-secrets"]
    assert summary["started_at"] == min(r["started_at"] for r in spans)
    assert summary["ended_at"] == max(
        r["started_at"] + timedelta(microseconds=r["duration_us"]) for r in spans
    )
    assert summary["started_at"].tzinfo is not None
    assert abs(summary["started_at"] - datetime.now(UTC)) < timedelta(minutes=5)
    assert summary["ended_at"] - summary["started_at"] >= timedelta(seconds=59)
    assert rows[planted]["org_id"] == CONFLICT_ORG and rows[planted]["span_count"] == 2
