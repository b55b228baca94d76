"""References resolve in batches: N work orders through `_entities` cost one work_orders query,
and their sites / secret refs one query each, not one per entity."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from services.workorders.api import request_unit
from tests.fixtures.round_trips import keywords, simple_statements
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


BOARD = """query($region: ID, $first: Int) { workOrders(regionId: $region, first: $first) {
  edges { node { id title status site { address } assignee { id } secretRefs { id kind } } } } }"""


async def test_the_board_costs_the_same_statements_for_2_or_6_jobs(
    running: Running, org: Org
) -> None:
    """The dispatcher's board (issue 11): a page of work orders with their sites' addresses
    (contact data: decrypted and audited), assignees and secret references is a fixed number
    of statements, whatever the page size; every customer read is still audited, the events
    written in one INSERT."""
    for _ in range(6):
        await make_job(running, org)

    async def board(first: int) -> tuple[list[str], list[dict[str, Any]]]:
        with counting(running) as statements:
            data = await ok(running, BOARD, {"region": org.r1, "first": first}, org.admin.token)
        # The outbox senders' own passes run in the background meanwhile: not the request's.
        mine = [s for s in statements if "outbox" not in s or s.startswith("INSERT")]
        return mine, [e["node"] for e in data["workOrders"]["edges"]]

    await board(2)  # warm: data keys cached, as on a dispatcher's second refresh
    small, two = await board(2)
    before = len(running.audit.of(org.id, "customer.contact.read"))
    large, six = await board(6)
    assert len(two) == 2 and len(six) == 6
    assert all(job["site"]["address"] for job in six)
    assert len(large) == len(small), "\n".join(s.split("\n")[0][:120] for s in large)
    inserts = [s for s in large if "INSERT INTO audit_outbox" in s]
    assert len(inserts) == 1, inserts
    customers = {job["site"]["address"] for job in six}
    # Delivered by the outbox: one event per customer read, none lost.
    await eventually_count(running, org, before + len(customers))


async def eventually_count(running: Running, org: Org, expected: int) -> None:
    import asyncio

    for _ in range(100):
        if len(running.audit.of(org.id, "customer.contact.read")) >= expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"{len(running.audit.of(org.id, 'customer.contact.read'))} contact reads audited, "
        f"expected {expected}"
    )


def in_a_request() -> bool:
    """Whether the database is used on behalf of a GraphQL request (its tasks carry the
    request's unit), not by a background sender of the same process."""
    return request_unit._current.get() is not None


async def test_a_board_is_one_connection_without_begin_commit_or_orm_session(
    running: Running, org: Org
) -> None:
    """Every read of a request shares one pooled connection (issue 11): one checkout for the
    whole board, however many levels it has (it was four), without a transaction: no BEGIN and
    no COMMIT goes to PostgreSQL. A board's reads are raw statements and open no ORM session
    at all, and the contact reads' audit events are one INSERT."""
    for _ in range(3):
        await make_job(running, org)
    engine = running.runtime.db.engine.sync_engine
    checkouts: list[int] = []
    commits: list[int] = []
    sessions: list[int] = []

    def checkout(*_: Any) -> None:
        if in_a_request():
            checkouts.append(1)

    def commit(*_: Any) -> None:
        if in_a_request():
            commits.append(1)

    def session_begun(*_: Any) -> None:
        if in_a_request():
            sessions.append(1)

    await ok(running, BOARD, {"region": org.r1, "first": 3}, org.admin.token)  # warm
    event.listen(engine.pool, "checkout", checkout)
    event.listen(engine, "commit", commit)
    event.listen(Session, "after_transaction_create", session_begun)
    try:
        with simple_statements(running.runtime.db.engine) as sent, counting(running) as executed:
            data = await ok(running, BOARD, {"region": org.r1, "first": 3}, org.admin.token)
    finally:
        event.remove(engine.pool, "checkout", checkout)
        event.remove(engine, "commit", commit)
        event.remove(Session, "after_transaction_create", session_begun)
    jobs = [e["node"] for e in data["workOrders"]["edges"]]
    assert len(jobs) == 3 and all(j["site"]["address"] for j in jobs)
    assert (len(checkouts), len(commits), len(sessions)) == (1, 0, 0)
    assert not {"BEGIN", "COMMIT", "ROLLBACK"} & set(keywords(sent)), sent
    inserts = [s for s in executed if s.startswith("INSERT INTO audit_outbox")]
    assert len(inserts) == 1, executed
    # The INSERT is the request's last statement: after every read, before the answer (the
    # outbox sender's own passes run in the background meanwhile: not the request's).
    mine = [s for s in executed if "outbox" not in s or s.startswith("INSERT")]
    assert mine[-1].startswith("INSERT INTO audit_outbox"), mine


async def test_contact_data_does_not_leave_when_its_audit_does_not_commit(
    running: Running, org: Org
) -> None:
    """The contact reads' audit events are written (one INSERT, which commits on its own)
    before the answer leaves; when that fails, the answer carries no address, only an error."""
    await make_job(running, org)
    await ok(running, BOARD, {"region": org.r1, "first": 1}, org.admin.token)  # warm
    engine = running.runtime.db.engine.sync_engine
    before = len(running.audit.of(org.id, "customer.contact.read"))

    def refuse(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if in_a_request() and statement.startswith("INSERT INTO audit_outbox"):
            raise RuntimeError("insert refused (test)")

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        body = await running.gql(BOARD, {"region": org.r1, "first": 1}, token=org.admin.token)
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert body.get("data") is None, body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAVAILABLE"]
    assert "Keyhole" not in str(body)
    # Nothing of it was committed; the honest board works again at once, and its read is
    # on the trail.
    data = await ok(running, BOARD, {"region": org.r1, "first": 1}, org.admin.token)
    assert "Keyhole" in data["workOrders"]["edges"][0]["node"]["site"]["address"]
    await eventually_count(running, org, before + 1)
    assert len(running.audit.of(org.id, "customer.contact.read")) == before + 1


MIXED = """query($region: ID, $first: Int) { workOrders(regionId: $region, first: $first) {
  edges { node { id site { address customer { name } } } } } }"""


async def test_raw_and_orm_reads_of_one_request_share_its_connection_and_both_are_audited(
    running: Running, org: Org
) -> None:
    """A request that reads addresses (the raw reader: events in the request's batch) and a
    customer's contact (the ORM session: events in its flush) checks out one connection; both
    kinds of event are written before the answer leaves, and a failure of either write
    replaces the whole answer."""
    await make_job(running, org)
    engine = running.runtime.db.engine.sync_engine
    checkouts: list[int] = []

    def checkout(*_: Any) -> None:
        if in_a_request():
            checkouts.append(1)

    await ok(running, MIXED, {"region": org.r1, "first": 1}, org.admin.token)  # warm
    reads = len(running.audit.of(org.id, "customer.contact.read"))
    event.listen(engine.pool, "checkout", checkout)
    try:
        with counting(running) as executed:
            data = await ok(running, MIXED, {"region": org.r1, "first": 1}, org.admin.token)
    finally:
        event.remove(engine.pool, "checkout", checkout)
    site = data["workOrders"]["edges"][0]["node"]["site"]
    assert "Keyhole" in site["address"] and site["customer"]["name"] == "Ada Customer"
    assert len(checkouts) == 1
    assert len([s for s in executed if s.startswith("INSERT INTO audit_outbox")]) == 2
    await eventually_count(running, org, reads + 2)  # the address read and the contact read

    def refuse(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # Only the ORM flush's INSERT (VALUES; the batch's selects FROM unnest).
        if (
            in_a_request()
            and statement.startswith("INSERT INTO audit_outbox")
            and ("VALUES" in statement)
        ):
            raise RuntimeError("insert refused (test)")

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        body = await running.gql(MIXED, {"region": org.r1, "first": 1}, token=org.admin.token)
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert body.get("data") is None, body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAVAILABLE"]
    assert "Keyhole" not in str(body) and "Ada" not in str(body)


async def test_a_connection_a_request_used_in_autocommit_comes_back_transactional(
    running: Running, org: Org
) -> None:
    """The request's ORM session sets autocommit on the request's connection; the pool must
    give it back as it was, or the next unit of work (a mutation) would commit statement by
    statement. The pool is last-in-first-out: the next checkout is that connection."""
    await make_job(running, org)
    db = running.runtime.db
    for _ in range(3):
        await ok(running, MIXED, {"region": org.r1, "first": 1}, org.admin.token)
        async with db.unit_of_work() as session:
            first = (await session.execute(text("SELECT txid_current()"))).scalar_one()
            second = (await session.execute(text("SELECT txid_current()"))).scalar_one()
        assert first == second  # one transaction, not two autocommitted statements
