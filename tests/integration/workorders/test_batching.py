"""References resolve in batches: N work orders through `_entities` cost one work_orders query,
and their sites / secret refs one query each, not one per entity."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.integration.workorders.conftest import Org, Running, make_customer, make_job, ok

pytestmark = pytest.mark.integration

ENTITIES = """query($reps: [_Any!]!) { _entities(representations: $reps) {
  ... on WorkOrder { id site { id secrets { id } } secretRefs { id } invoiceLines { id } } } }"""


@contextmanager
def counting(running: Running) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = running.runtime.db.engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_entities_load_in_one_query_per_relation(running: Running, org: Org) -> None:
    site = await make_customer(running, org)
    jobs = [await make_job(running, org, site=site) for _ in range(8)]
    reps = [{"__typename": "WorkOrder", "id": j.work_order_id} for j in jobs]
    with counting(running) as statements:
        data = await ok(running, ENTITIES, {"reps": reps}, org.tech.token)
    assert [e["id"] for e in data["_entities"]] == [j.work_order_id for j in jobs]
    assert all(len(e["secretRefs"]) == 1 for e in data["_entities"])
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]

    def touching(table: str) -> int:
        return sum(1 for s in selects if f"FROM {table}" in s)

    assert touching("work_orders") <= 2  # the batch, plus the technician's job-site check
    assert touching("work_order_secrets") == 1
    assert touching("invoice_lines") == 1
    assert touching("site_secret_refs") == 1
    assert len(running.secrets.refs) >= 8
