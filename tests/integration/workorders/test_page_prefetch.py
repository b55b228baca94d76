"""The list resolvers (`workOrders`, `myJobs`) load their rows' `site`, `site.address` and
`secretRefs` in one batch per level (api/graphql.py `_prefetch`, issue 11). An address is
contact data: the page reads it, and audits the read, only when the operation will resolve
it, and each row answers what the row's own field answers where nobody prefetched."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.workorders.conftest import Org, Running, make_job, ok
from tests.integration.workorders.test_batching import counting, eventually_count

pytestmark = pytest.mark.integration

PAGE = """query($region: ID, $a: Boolean!) { workOrders(regionId: $region, first: 10) {
  edges { node { id site { id address @include(if: $a) } secretRefs { id kind label } } } } }"""
SITE_ONLY = """query($region: ID) { workOrders(regionId: $region, first: 10) {
  edges { node { id site { id } } } } }"""
ONE = """query($id: ID!) { workOrder(id: $id) { id site { id address }
  secretRefs { id kind label } } }"""
MY_JOBS = "{ myJobs { id site { id address } secretRefs { id kind label } } }"


async def _contact_reads(running: Running, org: Org) -> int:
    return len(running.audit.of(org.id, "customer.contact.read"))


async def test_an_address_is_read_only_where_the_operation_resolves_it(
    running: Running, org: Org
) -> None:
    jobs = [await make_job(running, org) for _ in range(3)]
    before = await _contact_reads(running, org)
    with counting(running) as statements:
        await ok(running, SITE_ONLY, {"region": org.r1}, org.admin.token)
        skipped = await ok(running, PAGE, {"region": org.r1, "a": False}, org.admin.token)
    # No address selected: no customer read for it (the sites are read, their customers not).
    assert not [s for s in statements if "FROM customers" in s], statements
    assert all("address" not in e["node"]["site"] for e in skipped["workOrders"]["edges"])
    data = await ok(running, PAGE, {"region": org.r1, "a": True}, org.admin.token)
    nodes = [e["node"] for e in data["workOrders"]["edges"]]
    assert {n["id"] for n in nodes} == {j.work_order_id for j in jobs}
    assert all(n["site"]["address"] and len(n["secretRefs"]) == 1 for n in nodes)
    # One event per site read, delivered; none for the two operations that did not read.
    await eventually_count(running, org, before + 3)
    assert await _contact_reads(running, org) == before + 3


async def test_a_pages_rows_answer_as_each_order_alone(running: Running, org: Org) -> None:
    """The page's batches against the real database, secrets and audit: every row is what the
    same selection of that order alone (`workOrder`, no prefetch) answers; a technician's
    `myJobs` too."""
    jobs = [await make_job(running, org) for _ in range(3)]
    page = await ok(running, PAGE, {"region": org.r1, "a": True}, org.admin.token)
    alone: dict[str, Any] = {}
    for job in jobs:
        data = await ok(running, ONE, {"id": job.work_order_id}, org.admin.token)
        alone[job.work_order_id] = data["workOrder"]
    for edge in page["workOrders"]["edges"]:
        assert edge["node"] == alone[edge["node"]["id"]]
    mine = await ok(running, MY_JOBS, {}, org.tech.token)
    assert {j["id"] for j in mine["myJobs"]} == set(alone)
    for job in mine["myJobs"]:
        assert job == alone[job["id"]]
    # Another technician's day holds none of them, and reads no address.
    before = await _contact_reads(running, org)
    other = await ok(running, MY_JOBS, {}, org.tech2.token)
    assert other["myJobs"] == []
    await ok(running, PAGE, {"region": org.r1, "a": True}, org.admin.token)
    await eventually_count(running, org, before + 3)
    assert await _contact_reads(running, org) == before + 3
