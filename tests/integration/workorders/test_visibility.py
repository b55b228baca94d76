"""The role x region x organisation matrix for reads: every query from both sides."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.integration.workorders.conftest import (
    WORK_ORDER,
    Org,
    Running,
    error_code,
    make_customer,
    make_job,
    ok,
)

pytestmark = pytest.mark.integration

LIST = """query($s: WorkOrderStatus, $r: ID, $a: ID, $from: DateTime, $to: DateTime,
  $first: Int, $after: String) {
  workOrders(status: $s, regionId: $r, assigneeId: $a, from: $from, to: $to,
             first: $first, after: $after) {
    edges { cursor node { id assignee { id } region { id } } }
    pageInfo { hasNextPage endCursor } } }"""
MY_JOBS = "query($d: Date) { myJobs(date: $d) { id scheduledStart } }"
ENTITIES = """query($reps: [_Any!]!) { _entities(representations: $reps) {
  ... on WorkOrder { id title }
  ... on Site { id }
  ... on User { id assignedWorkOrders { id } } } }"""
ASSIGNED = """query($reps: [_Any!]!, $from: DateTime, $to: DateTime) {
  _entities(representations: $reps) {
  ... on User { id assignedWorkOrders(from: $from, to: $to) { id } } } }"""


def _ids(data: dict) -> set[str]:
    return {e["node"]["id"] for e in data["workOrders"]["edges"]}


async def test_technician_sees_only_own_job_by_id_list_and_user(running: Running, org: Org) -> None:
    mine = await make_job(running, org, assignee=org.tech)
    theirs = await make_job(running, org, assignee=org.tech2)

    # by id
    await ok(running, WORK_ORDER, {"id": mine.work_order_id}, org.tech.token)
    body = await running.gql(WORK_ORDER, {"id": theirs.work_order_id}, token=org.tech.token)
    assert error_code(body) == "NOT_FOUND"
    # by list filter
    data = await ok(running, LIST, {}, org.tech.token)
    assert mine.work_order_id in _ids(data) and theirs.work_order_id not in _ids(data)
    data = await ok(running, LIST, {"a": org.tech2.id}, org.tech.token)
    assert _ids(data) == set()
    # through User.assignedWorkOrders of someone else
    body = await running.gql(
        ASSIGNED, {"reps": [{"__typename": "User", "id": org.tech2.id}]}, token=org.tech.token
    )
    assert error_code(body) == "FORBIDDEN"
    data = await ok(
        running, ASSIGNED, {"reps": [{"__typename": "User", "id": org.tech.id}]}, org.tech.token
    )
    own = {w["id"] for w in data["_entities"][0]["assignedWorkOrders"]}
    assert mine.work_order_id in own and theirs.work_order_id not in own
    # through _entities of the job itself
    data = await ok(
        running,
        ENTITIES,
        {
            "reps": [
                {"__typename": "WorkOrder", "id": theirs.work_order_id},
                {"__typename": "Site", "id": theirs.site_id},
                {"__typename": "WorkOrder", "id": mine.work_order_id},
            ]
        },
        org.tech.token,
    )
    assert data["_entities"][0] is None and data["_entities"][1] is None
    assert data["_entities"][2]["id"] == mine.work_order_id


async def test_dispatcher_sees_only_their_regions(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    body = await running.gql(WORK_ORDER, {"id": job.work_order_id}, token=org.dispatcher_r2.token)
    assert error_code(body) == "NOT_FOUND"
    data = await ok(running, LIST, {}, org.dispatcher_r2.token)
    assert job.work_order_id not in _ids(data)
    data = await ok(running, LIST, {"r": org.r1}, org.dispatcher_r2.token)
    assert _ids(data) == set()
    data = await ok(running, LIST, {"r": org.r1}, org.dispatcher.token)
    assert job.work_order_id in _ids(data)
    # assignedWorkOrders of a technician: only jobs in the dispatcher's regions.
    reps = {"reps": [{"__typename": "User", "id": org.tech.id}]}
    data = await ok(running, ASSIGNED, reps, org.dispatcher_r2.token)
    assert job.work_order_id not in {w["id"] for w in data["_entities"][0]["assignedWorkOrders"]}
    data = await ok(running, ASSIGNED, reps, org.dispatcher.token)
    assert job.work_order_id in {w["id"] for w in data["_entities"][0]["assignedWorkOrders"]}
    # admin sees every region
    await ok(running, WORK_ORDER, {"id": job.work_order_id}, org.admin.token)


async def test_nobody_sees_another_organisation(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    other = running.new_org()
    for person in (other.admin, other.dispatcher, other.tech):
        body = await running.gql(WORK_ORDER, {"id": job.work_order_id}, token=person.token)
        assert error_code(body) == "NOT_FOUND"
        data = await ok(running, LIST, {}, person.token)
        assert _ids(data) == set()
    data = await ok(
        running,
        ENTITIES,
        {"reps": [{"__typename": "WorkOrder", "id": job.work_order_id}]},
        other.admin.token,
    )
    assert data["_entities"] == [None]


async def test_auditor_sees_no_work_orders_and_tokens_are_required(
    running: Running, org: Org
) -> None:
    job = await make_job(running, org)
    body = await running.gql(WORK_ORDER, {"id": job.work_order_id}, token=org.auditor.token)
    assert error_code(body) == "NOT_FOUND"
    data = await ok(running, LIST, {}, org.auditor.token)
    assert _ids(data) == set()
    body = await running.gql(WORK_ORDER, {"id": job.work_order_id})
    assert error_code(body) == "UNAUTHENTICATED"
    body = await running.gql(
        ENTITIES, {"reps": [{"__typename": "WorkOrder", "id": job.work_order_id}]}
    )
    assert error_code(body) == "UNAUTHENTICATED"
    restricted = running.issuer.token(
        user_id=org.admin.id, org_id=org.id, roles=["ADMIN"], regions=[org.r1], scope="restricted"
    )
    body = await running.gql(WORK_ORDER, {"id": job.work_order_id}, token=restricted)
    assert error_code(body) == "FORBIDDEN"


async def test_pagination_and_filters(running: Running, org: Org) -> None:
    fresh = running.new_org()
    ids = []
    site = await make_customer(running, fresh)
    for _ in range(5):
        job = await make_job(running, fresh, site=site, with_secret=False)
        ids.append(job.work_order_id)
    seen: list[str] = []
    after = None
    while True:
        data = await ok(running, LIST, {"first": 2, "after": after}, fresh.admin.token)
        seen += [e["node"]["id"] for e in data["workOrders"]["edges"]]
        if not data["workOrders"]["pageInfo"]["hasNextPage"]:
            break
        after = data["workOrders"]["pageInfo"]["endCursor"]
    assert seen == ids
    data = await ok(running, LIST, {"s": "DISPATCHED", "first": 500}, fresh.admin.token)
    assert len(data["workOrders"]["edges"]) == 5
    data = await ok(running, LIST, {"s": "COMPLETED"}, fresh.admin.token)
    assert _ids(data) == set()
    later = datetime.now(UTC) + timedelta(days=2)
    data = await ok(running, LIST, {"from": later.isoformat()}, fresh.admin.token)
    assert _ids(data) == set()
    body = await running.gql(LIST, {"after": "not-a-cursor"}, token=fresh.admin.token)
    assert error_code(body) == "BAD_USER_INPUT"
    body = await running.gql(LIST, {"first": -1}, token=fresh.admin.token)
    assert error_code(body) == "BAD_USER_INPUT"
    body = await running.gql(LIST, {"from": "2026-11-23T10:00:00"}, token=fresh.admin.token)
    assert error_code(body) == "BAD_USER_INPUT"
    data = await ok(running, LIST, {"first": 500}, fresh.admin.token)
    assert len(data["workOrders"]["edges"]) == 5


async def test_my_jobs_for_a_day(running: Running, org: Org) -> None:
    today = await make_job(running, org, assignee=org.tech, with_secret=False)
    tomorrow = await make_job(
        running, org, assignee=org.tech, start_in=timedelta(days=1), with_secret=False
    )
    theirs = await make_job(running, org, assignee=org.tech2, with_secret=False)
    data = await ok(running, MY_JOBS, {}, org.tech.token)
    ids = {j["id"] for j in data["myJobs"]}
    # The day is UTC (the organisation set no time zone); a job that crosses midnight counts.
    assert today.work_order_id in ids and theirs.work_order_id not in ids
    next_day = (datetime.now(UTC) + timedelta(days=1)).date()
    data = await ok(running, MY_JOBS, {"d": next_day.isoformat()}, org.tech.token)
    assert tomorrow.work_order_id in {j["id"] for j in data["myJobs"]}
    data = await ok(running, MY_JOBS, {"d": date(2000, 1, 1).isoformat()}, org.tech.token)
    assert data["myJobs"] == []
    body = await running.gql(MY_JOBS, {"d": "0001-01-01"}, token=org.tech.token)
    assert error_code(body) == "BAD_USER_INPUT"
    # Dispatchers have no "my jobs".
    data = await ok(running, MY_JOBS, {}, org.dispatcher.token)
    assert data["myJobs"] == []


async def test_my_jobs_day_follows_the_organisation_time_zone(running: Running) -> None:
    org = running.new_org()
    await ok(
        running,
        'mutation { updateAccessWindowPolicy(input: {timezone: "Pacific/Kiritimati"}) '
        "{ timezone } }",
        {},
        org.admin.token,
    )
    job = await make_job(running, org, start_in=timedelta(hours=30), with_secret=False)
    data = await ok(running, WORK_ORDER, {"id": job.work_order_id}, org.tech.token)
    start = datetime.fromisoformat(data["workOrder"]["scheduledStart"])
    local_day = start.astimezone(ZoneInfo("Pacific/Kiritimati")).date()
    utc_day = start.astimezone(UTC).date()
    data = await ok(running, MY_JOBS, {"d": local_day.isoformat()}, org.tech.token)
    assert job.work_order_id in {j["id"] for j in data["myJobs"]}
    if local_day != utc_day and start.astimezone(UTC).hour >= 2:
        data = await ok(running, MY_JOBS, {"d": utc_day.isoformat()}, org.tech.token)
        assert job.work_order_id not in {j["id"] for j in data["myJobs"]}
