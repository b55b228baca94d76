"""A job's life through the real service: create, assign, dispatch, start, complete; the state
machine's refusals name their rule; completion/cancellation/reassignment/rescheduling revoke
grants through the outbox, even while secrets is down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from services.workorders.outbox import RevocationSender
from tests.integration.workorders.conftest import (
    ASSIGN,
    CANCEL,
    COMPLETE,
    CREATE_WO,
    DISPATCH,
    START,
    UPDATE,
    WORK_ORDER,
    Org,
    Running,
    error_code,
    eventually,
    iso,
    make_customer,
    make_job,
    ok,
)

pytestmark = pytest.mark.integration


async def test_a_job_from_draft_to_completed(running: Running, org: Org) -> None:
    _, site_id = await make_customer(running, org)
    draft = await ok(
        running,
        CREATE_WO,
        {"input": {"siteId": site_id, "title": "Service the alarm"}},
        org.dispatcher.token,
    )
    order = draft["createWorkOrder"]
    assert order["status"] == "DRAFT"
    assert order["region"] == {"id": org.r1}
    now = datetime.now(UTC)
    updated = await ok(
        running,
        UPDATE,
        {
            "id": order["id"],
            "input": {
                "scheduledStart": iso(now - timedelta(minutes=5)),
                "scheduledEnd": iso(now + timedelta(hours=1)),
            },
        },
        org.dispatcher.token,
    )
    assert updated["updateWorkOrder"]["status"] == "SCHEDULED"
    await ok(running, ASSIGN, {"id": order["id"], "a": org.tech.id}, org.dispatcher.token)
    await ok(running, DISPATCH, {"id": order["id"]}, org.dispatcher.token)
    started = await ok(running, START, {"id": order["id"]}, org.tech.token)
    assert started["startWorkOrder"]["status"] == "IN_PROGRESS"
    done = await ok(running, COMPLETE, {"id": order["id"]}, org.tech.token)
    assert done["completeWorkOrder"]["status"] == "COMPLETED"
    assert done["completeWorkOrder"]["completedAt"]
    await eventually(
        lambda: any(
            r.work_order_id == order["id"] and r.reason == "completed"
            for r in running.secrets.revocations
        )
    )
    await eventually(
        lambda: (
            {e.action for e in running.audit.events if e.work_order_id == order["id"]}
            >= {
                "workorder.create",
                "workorder.update",
                "workorder.assign",
                "workorder.dispatch",
                "workorder.start",
                "workorder.complete",
            }
        )
    )
    numbers = await ok(running, WORK_ORDER, {"id": order["id"]}, org.admin.token)
    assert numbers["workOrder"]["number"] >= 1


async def test_bad_moves_name_their_rule(running: Running, org: Org) -> None:
    job = await make_job(running, org, dispatch=False)
    body = await running.gql(COMPLETE, {"id": job.work_order_id}, token=org.dispatcher.token)
    assert error_code(body) == "CONFLICT"
    assert "SCHEDULED" in body["errors"][0]["message"]
    body = await running.gql(START, {"id": job.work_order_id}, token=org.tech.token)
    assert error_code(body) == "CONFLICT"

    _, site_id = await make_customer(running, org)
    now = datetime.now(UTC)
    backwards = {
        "siteId": site_id,
        "title": "x",
        "scheduledStart": iso(now + timedelta(hours=2)),
        "scheduledEnd": iso(now + timedelta(hours=1)),
    }
    body = await running.gql(CREATE_WO, {"input": backwards}, token=org.dispatcher.token)
    assert error_code(body) == "BAD_USER_INPUT"
    assert "before" in body["errors"][0]["message"]
    too_long = dict(backwards, scheduledEnd=iso(now + timedelta(hours=15)))
    body = await running.gql(CREATE_WO, {"input": too_long}, token=org.dispatcher.token)
    assert error_code(body) == "BAD_USER_INPUT"
    assert "12 hours" in body["errors"][0]["message"]
    past = dict(
        backwards,
        scheduledStart=iso(now - timedelta(hours=3)),
        scheduledEnd=iso(now - timedelta(hours=2)),
    )
    body = await running.gql(CREATE_WO, {"input": past}, token=org.dispatcher.token)
    assert error_code(body) == "BAD_USER_INPUT"

    draft = await ok(
        running, CREATE_WO, {"input": {"siteId": site_id, "title": "x"}}, org.dispatcher.token
    )
    draft_id = draft["createWorkOrder"]["id"]
    body = await running.gql(DISPATCH, {"id": draft_id}, token=org.dispatcher.token)
    assert error_code(body) == "CONFLICT"

    # The admin sees everyone, so gets the precise rule; a dispatcher is told about the
    # other region's technician only what an unknown id would tell them.
    for assignee, rule, caller in (
        (org.inactive_tech, "ACTIVE", org.dispatcher),
        (org.tech_r2, "region", org.admin),
        (org.tech_r2, "no such user", org.dispatcher),
        (org.dispatcher, "TECHNICIAN or SUBCONTRACTOR", org.dispatcher),
    ):
        body = await running.gql(
            ASSIGN, {"id": job.work_order_id, "a": assignee.id}, token=caller.token
        )
        assert error_code(body) == "BAD_USER_INPUT", body
        assert rule in body["errors"][0]["message"]
    other_org_user = running.new_org().tech
    body = await running.gql(
        ASSIGN, {"id": job.work_order_id, "a": other_org_user.id}, token=org.dispatcher.token
    )
    assert error_code(body) == "BAD_USER_INPUT"

    body = await running.gql(
        CANCEL, {"id": job.work_order_id, "r": " "}, token=org.dispatcher.token
    )
    assert error_code(body) == "BAD_USER_INPUT"
    await ok(
        running, CANCEL, {"id": job.work_order_id, "r": "customer called"}, org.dispatcher.token
    )
    body = await running.gql(
        CANCEL, {"id": job.work_order_id, "r": "again"}, token=org.dispatcher.token
    )
    assert error_code(body) == "CONFLICT"


async def test_who_may_make_each_move(running: Running, org: Org) -> None:
    job = await make_job(running, org, dispatch=False)
    # Field staff may not plan: assign, dispatch, cancel, update are refused.
    for query, variables in (
        (ASSIGN, {"id": job.work_order_id, "a": org.tech.id}),
        (DISPATCH, {"id": job.work_order_id}),
        (CANCEL, {"id": job.work_order_id, "r": "no"}),
        (UPDATE, {"id": job.work_order_id, "input": {"title": "mine now"}}),
    ):
        body = await running.gql(query, variables, token=org.tech.token)
        assert error_code(body) == "FORBIDDEN", body
    await ok(running, DISPATCH, {"id": job.work_order_id}, org.dispatcher.token)
    # Another technician of the same region cannot even see it.
    body = await running.gql(START, {"id": job.work_order_id}, token=org.tech2.token)
    assert error_code(body) == "NOT_FOUND"
    await ok(running, START, {"id": job.work_order_id}, org.tech.token)
    # The refusals were audited as DENIED.
    await eventually(
        lambda: any(
            e.action == "workorder.start" and e.actor_id == org.tech2.id and e.outcome == 2
            for e in running.audit.events
        )
    )


async def test_revocations_survive_secrets_being_down(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    running.secrets.revoke_failures_left = 2
    await ok(running, CANCEL, {"id": job.work_order_id, "r": "weather"}, org.dispatcher.token)
    await eventually(
        lambda: any(
            r.work_order_id == job.work_order_id and r.reason == "cancelled"
            for r in running.secrets.revocations
        ),
        timeout=10,
    )


async def test_reassignment_and_rescheduling_revoke(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    await ok(running, ASSIGN, {"id": job.work_order_id, "a": org.tech2.id}, org.dispatcher.token)
    now = datetime.now(UTC)
    await ok(
        running,
        UPDATE,
        {
            "id": job.work_order_id,
            "input": {
                "scheduledStart": iso(now + timedelta(hours=1)),
                "scheduledEnd": iso(now + timedelta(hours=2)),
            },
        },
        org.dispatcher.token,
    )
    await eventually(
        lambda: (
            {r.reason for r in running.secrets.revocations if r.work_order_id == job.work_order_id}
            >= {"reassigned", "rescheduled"}
        )
    )


async def test_the_revocation_is_written_with_the_change(running: Running, org: Org) -> None:
    """The outbox row commits with the completion; a fresh sender (a restarted process) that
    finds it delivers it, so a crash between the two loses nothing."""
    job = await make_job(running, org, with_secret=False)
    running.secrets.revoke_failures_left = 10_000
    try:
        await ok(running, START, {"id": job.work_order_id}, org.tech.token)
        await ok(running, COMPLETE, {"id": job.work_order_id}, org.tech.token)
        async with running.runtime.db.engine.connect() as conn:
            owed = (
                (
                    await conn.execute(
                        text("SELECT reason FROM secrets_outbox WHERE work_order_id = :id"),
                        {"id": job.work_order_id},
                    )
                )
                .scalars()
                .all()
            )
        assert owed == ["completed"]
    finally:
        running.secrets.revoke_failures_left = 0
    restarted = RevocationSender(running.runtime.db, running.runtime.service.secrets)
    async with running.runtime.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE secrets_outbox SET next_attempt_at = now() WHERE work_order_id = :id"),
            {"id": job.work_order_id},
        )
    await restarted.deliver_once()
    await eventually(
        lambda: any(
            r.work_order_id == job.work_order_id and r.reason == "completed"
            for r in running.secrets.revocations
        )
    )


async def test_every_mutation_is_on_the_trail(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    await ok(
        running,
        "mutation($w: ID!) { addInvoiceLine(workOrderId: $w, "
        'input: {description: "x", quantity: "1", unitPrice: "2"}) { id } }',
        {"w": job.work_order_id},
        org.dispatcher.token,
    )
    await ok(
        running,
        'mutation($w: ID!) { addWorkNote(workOrderId: $w, text: "done") { id } }',
        {"w": job.work_order_id},
        org.tech.token,
    )
    await ok(
        running,
        "mutation { updateAccessWindowPolicy(input: {leadMinutes: 30}) { leadMinutes } }",
        {},
        org.admin.token,
    )
    expected = {
        "customer.create",
        "site.create",
        "workorder.create",
        "secret.upload.prepare",
        "secret.attach",
        "workorder.assign",
        "workorder.dispatch",
        "workorder.invoice.add",
        "workorder.note.add",
        "org.access_window.update",
    }
    await eventually(
        lambda: {e.action for e in running.audit.events if e.org_id == org.id} >= expected
    )
    for event in running.audit.events:
        if event.org_id == org.id:
            assert event.service == "workorders" and event.actor_id and event.id


async def test_a_running_job_may_be_extended_and_its_grants_are_revoked(
    running: Running, org: Org
) -> None:
    job = await make_job(running, org)
    await ok(running, START, {"id": job.work_order_id}, org.tech.token)
    later = datetime.now(UTC) + timedelta(hours=4)
    data = await ok(
        running,
        UPDATE,
        {"id": job.work_order_id, "input": {"scheduledEnd": iso(later)}},
        org.dispatcher.token,
    )
    assert data["updateWorkOrder"]["status"] == "IN_PROGRESS"
    await eventually(
        lambda: any(
            r.work_order_id == job.work_order_id and r.reason == "rescheduled"
            for r in running.secrets.revocations
        )
    )
    await ok(running, COMPLETE, {"id": job.work_order_id}, org.tech.token)
    body = await running.gql(
        UPDATE, {"id": job.work_order_id, "input": {"title": "late"}}, token=org.dispatcher.token
    )
    assert error_code(body) == "CONFLICT"
