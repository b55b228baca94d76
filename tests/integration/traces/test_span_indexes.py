"""The trace store's security-ops filter indexes (migration 0003) are partial: only spans that
carry the attribute take an entry (most carry none), and each still serves its filter."""

from __future__ import annotations

import asyncpg
import pytest

from tests.integration.traces.harness import running_store

pytestmark = pytest.mark.integration


async def test_the_filter_indexes_are_partial_and_serve_their_filters(postgres) -> None:
    async with running_store(postgres) as s:
        conn = await asyncpg.connect(s.dsn)
        try:
            definitions = {
                r["indexname"]: r["indexdef"]
                for r in await conn.fetch(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'spans'"
                )
            }
            for name, column in (
                ("ix_spans_decision", "decision"),
                ("ix_spans_work_order", "work_order_id"),
                ("ix_spans_secret_ref", "secret_ref_id"),
                ("ix_spans_actor", "actor_pseudo_id"),
            ):
                assert f"WHERE ({column} IS NOT NULL)" in definitions[name], definitions[name]
                await conn.execute("SET enable_seqscan = off")
                plan = "\n".join(
                    r[0]
                    for r in await conn.fetch(
                        f"EXPLAIN SELECT trace_id FROM spans WHERE {column} = $1", "x"
                    )
                )
                assert name in plan, plan
        finally:
            await conn.close()
