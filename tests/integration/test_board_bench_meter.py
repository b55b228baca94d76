"""bench/board_bench.py's PostgreSQL figures: the CPU a backend spends is charged to its database
(and to the total), and statements per board take the idle background's rate out."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from bench.board_bench import POSTGRES, postgres_cpu_seconds, statements_per_call

pytestmark = pytest.mark.integration


async def test_a_backends_cpu_is_charged_to_its_database_and_to_the_total(postgres) -> None:
    server = postgres.server
    assert server.pid is not None
    name = f"meter_{uuid.uuid4().hex[:10]}"
    server.create_database(name)
    conn = await asyncpg.connect(server.admin_url(name))
    try:
        before = postgres_cpu_seconds(server.pid)
        # Work only the backend does: a fraction of a second of CPU.
        await conn.fetchval("SELECT sum(g) FROM generate_series(1, 3000000) g")
        after = postgres_cpu_seconds(server.pid)
    finally:
        await conn.close()
    key = f"pg:{name}"
    assert after.get(key, 0.0) - before.get(key, 0.0) >= 0.05
    assert after[POSTGRES] - before[POSTGRES] >= after[key] - before.get(key, 0.0) - 1e-9
    assert after[POSTGRES] == pytest.approx(sum(v for n, v in after.items() if n.startswith("pg:")))


def test_statements_per_board_take_the_idle_rate_out() -> None:
    poll = ("doorward_workorders", 1)
    board = ("doorward_workorders", 2)
    idle_start = {poll: ("SELECT poll", 10, 1.0)}
    idle_end = {poll: ("SELECT poll", 15, 1.5)}  # 1 a second over 5 s
    start = {poll: ("SELECT poll", 15, 1.5), board: ("SELECT page", 0, 0.0)}
    # 10 boards in 10 s: 10 page reads, and 10 polls that are the background's, not the boards'
    end = {poll: ("SELECT poll", 25, 2.5), board: ("SELECT page", 10, 2.0)}
    rows = statements_per_call(start, end, 10, (idle_start, idle_end, 5.0), 10.0)
    assert rows == [("workorders", 1.0, 0.2, "SELECT page")]
