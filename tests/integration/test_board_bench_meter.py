"""bench/board_bench.py's PostgreSQL figures: the CPU a backend spends is charged to its database
(and to the total), and statements per board take the idle background's rate out."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from bench.board_bench import (
    POSTGRES,
    REAPED,
    Meter,
    postgres_cpu_seconds,
    statements_per_call,
)

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
    spent = Meter.deltas(before, after)
    assert spent[f"pg:{name}"] >= 0.05
    assert spent[POSTGRES] >= spent[f"pg:{name}"] - 1e-9
    assert after[POSTGRES] == pytest.approx(sum(v for n, v in after.items() if n.startswith("pg:")))


def test_a_backend_that_ended_is_charged_only_what_it_spent_in_the_phase() -> None:
    start = {"pg:a#1": 1.0, "pg:a#2": 0.5, "pg:(background)#9": 0.1, REAPED: 3.0}
    # backend 2 ended after 0.3 s more (the postmaster reaped its whole 0.8 s); 3 is new
    end = {"pg:a#1": 1.5, "pg:b#3": 0.2, "pg:(background)#9": 0.1, REAPED: 3.8}
    start[POSTGRES], end[POSTGRES] = sum(start.values()), sum(end.values())
    spent = Meter.deltas(start, end)
    assert spent == pytest.approx(
        {"pg:a": 0.5, "pg:b": 0.2, "pg:(background)": 0.0, REAPED: 0.3, POSTGRES: 1.0}
    )


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
