"""Secret references (upload, rotation, attach, access, break-glass) authorised here before the
secrets service is asked; the access-window policy; invoice lines and notes; GetAccessContext."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from doorward.workorders.v1 import workorders_pb2, workorders_pb2_grpc

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import ServiceChannel
from tests.integration.workorders.conftest import (
    ATTACH,
    COMPLETE,
    CREATE_WO,
    PREPARE_UPLOAD,
    REQUEST_ACCESS,
    START,
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

ROTATE = """mutation($s: ID!) { prepareSecretRotation(secretRefId: $s) {
  secretRef { id } uploadUrl uploadToken expiresAt } }"""
BREAK_GLASS = """mutation($s: ID!, $r: String!, $w: ID, $o: String!) {
  requestBreakGlassAccess(secretRefId: $s, reason: $r, workOrderId: $w, otp: $o) {
    id status grant { id revealToken } } }"""
SITE_SECRETS = "query($id: ID!) { site(id: $id) { id secrets { id kind label version } } }"
POLICY = """mutation($input: AccessWindowPolicyInput!) { updateAccessWindowPolicy(input: $input) {
  leadMinutes graceMinutes maxWindowHours timezone } }"""
READ_POLICY = "query { accessWindowPolicy { leadMinutes graceMinutes maxWindowHours timezone } }"
ADD_LINE = """mutation($w: ID!, $input: InvoiceLineInput!) { addInvoiceLine(workOrderId: $w, input: $input) {
  id invoiceLines { id description quantity unitPrice total } } }"""
REMOVE_LINE = "mutation($id: ID!) { removeInvoiceLine(id: $id) { id invoiceLines { id } } }"
ADD_NOTE = """mutation($w: ID!, $t: String!) { addWorkNote(workOrderId: $w, text: $t) {
  id workNotes { text author { id } } } }"""


def _denials(running: Running, org: Org, actor: str) -> list[str]:
    return [
        e.details["reason"]
        for e in running.audit.of(org.id, "secret.access.denied")
        if e.actor_id == actor
    ]


async def test_assignee_in_window_gets_a_grant(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    data = await ok(
        running, REQUEST_ACCESS, {"w": job.work_order_id, "s": job.secret_ref_id}, org.tech.token
    )
    grant = data["requestSecretAccess"]
    assert grant["revealToken"] and grant["workOrder"]["id"] == job.work_order_id
    request, bearer = running.secrets.grants[-1]
    assert not request.HasField("break_glass")
    assert bearer == f"Bearer {org.tech.token}"  # the user's token is who the call acts for
    start = request.window_start.ToDatetime(tzinfo=UTC)
    end = request.window_end.ToDatetime(tzinfo=UTC)
    assert start < datetime.now(UTC) < end
    await eventually(lambda: bool(running.audit.of(org.id, "secret.access.request")))


async def test_secret_access_refusals_are_audited(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    grants_before = len(running.secrets.grants)
    variables = {"w": job.work_order_id, "s": job.secret_ref_id}
    cases = [
        (org.tech2, "NOT_FOUND", "work_order_not_found"),
        (org.dispatcher, "FORBIDDEN", "not_assignee"),
        (org.admin, "FORBIDDEN", "not_assignee"),
        (running.new_org().tech, "NOT_FOUND", "work_order_not_found"),
    ]
    for person, code, _ in cases:
        body = await running.gql(REQUEST_ACCESS, variables, token=person.token)
        assert error_code(body) == code, (person, body)
    # A secret of the same site that is not attached to the job.
    other = await ok(
        running,
        PREPARE_UPLOAD,
        {"s": job.site_id, "k": "ALARM_CODE", "l": "Alarm"},
        org.dispatcher.token,
    )
    unattached = other["prepareSecretUpload"]["secretRef"]["id"]
    body = await running.gql(
        REQUEST_ACCESS, {"w": job.work_order_id, "s": unattached}, token=org.tech.token
    )
    assert error_code(body) == "CONFLICT"
    # Outside the window, and not yet dispatched.
    later = await make_job(running, org, start_in=timedelta(hours=3))
    body = await running.gql(
        REQUEST_ACCESS, {"w": later.work_order_id, "s": later.secret_ref_id}, token=org.tech.token
    )
    assert error_code(body) == "OUTSIDE_ACCESS_WINDOW"
    scheduled = await make_job(running, org, dispatch=False)
    body = await running.gql(
        REQUEST_ACCESS,
        {"w": scheduled.work_order_id, "s": scheduled.secret_ref_id},
        token=org.tech.token,
    )
    assert error_code(body) == "OUTSIDE_ACCESS_WINDOW"
    # After completion the job gives nothing any more.
    await ok(running, START, {"id": job.work_order_id}, org.tech.token)
    await ok(running, COMPLETE, {"id": job.work_order_id}, org.tech.token)
    body = await running.gql(REQUEST_ACCESS, variables, token=org.tech.token)
    assert error_code(body) == "OUTSIDE_ACCESS_WINDOW"

    assert len(running.secrets.grants) == grants_before  # secrets was never asked
    await eventually(lambda: "work_order_not_found" in _denials(running, org, org.tech2.id))
    await eventually(lambda: "not_assignee" in _denials(running, org, org.dispatcher.id))
    await eventually(
        lambda: (
            {"secret_not_attached", "outside_window", "status_scheduled", "status_completed"}
            <= set(_denials(running, org, org.tech.id))
        )
    )


async def test_uploads_and_rotations(running: Running, org: Org) -> None:
    _, site_id = await make_customer(running, org)
    variables = {"s": site_id, "k": "KEY_SAFE", "l": "Key safe by the gate"}
    for person, code in (
        (org.tech, "NOT_FOUND"),
        (org.sub, "NOT_FOUND"),
        (org.auditor, "NOT_FOUND"),
        (org.dispatcher_r2, "NOT_FOUND"),
    ):
        body = await running.gql(PREPARE_UPLOAD, variables, token=person.token)
        assert error_code(body) == code, person
    data = await ok(running, PREPARE_UPLOAD, variables, org.dispatcher.token)
    slot = data["prepareSecretUpload"]
    assert slot["uploadUrl"].startswith("http") and slot["uploadToken"]
    ref_id = slot["secretRef"]["id"]
    request, bearer = running.secrets.uploads[-1]
    assert request.site_id == site_id and request.region_id == org.r1
    assert bearer == f"Bearer {org.dispatcher.token}"
    data = await ok(running, SITE_SECRETS, {"id": site_id}, org.dispatcher.token)
    assert data["site"]["secrets"] == [
        {"id": ref_id, "kind": "KEY_SAFE", "label": "Key safe by the gate", "version": 1}
    ]
    data = await ok(running, ROTATE, {"s": ref_id}, org.admin.token)
    assert data["prepareSecretRotation"]["secretRef"]["id"] == ref_id
    assert running.secrets.uploads[-1][0].secret_ref_id == ref_id
    for person in (org.tech, org.dispatcher_r2):
        body = await running.gql(ROTATE, {"s": ref_id}, token=person.token)
        assert error_code(body) == "NOT_FOUND"
    body = await running.gql(PREPARE_UPLOAD, dict(variables, l=""), token=org.dispatcher.token)
    assert error_code(body) == "BAD_USER_INPUT"


async def test_attach_rules(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    other = await make_job(running, org)
    # A secret of another site cannot be attached.
    body = await running.gql(
        ATTACH, {"w": job.work_order_id, "s": other.secret_ref_id}, token=org.dispatcher.token
    )
    assert error_code(body) == "CONFLICT"
    for person, code in ((org.tech, "FORBIDDEN"), (org.dispatcher_r2, "NOT_FOUND")):
        body = await running.gql(
            ATTACH, {"w": job.work_order_id, "s": job.secret_ref_id}, token=person.token
        )
        assert error_code(body) == code


async def test_break_glass(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    variables = {"s": job.secret_ref_id, "r": "Fire brigade needs access now", "w": None}
    variables["o"] = "123456"
    for person in (org.dispatcher, org.tech, org.auditor):
        body = await running.gql(BREAK_GLASS, variables, token=person.token)
        assert error_code(body) == "FORBIDDEN"
    body = await running.gql(BREAK_GLASS, dict(variables, r="   "), token=org.admin.token)
    assert error_code(body) == "BAD_USER_INPUT"
    body = await running.gql(BREAK_GLASS, dict(variables, o="000000"), token=org.admin.token)
    assert error_code(body) == "FORBIDDEN"
    data = await ok(running, BREAK_GLASS, variables, org.admin.token)
    answer = data["requestBreakGlassAccess"]
    assert answer["status"] == "APPROVED" and answer["grant"]["revealToken"]
    request, bearer = running.secrets.grants[-1]
    assert request.break_glass.request_id == answer["id"]
    assert request.break_glass.step_up and request.reason == variables["r"]
    assert request.work_order_id == job.work_order_id
    assert bearer == f"Bearer {org.admin.token}"


async def test_access_window_policy(running: Running, org: Org) -> None:
    fresh = running.new_org()
    data = await ok(running, READ_POLICY, {}, fresh.tech.token)
    assert data["accessWindowPolicy"] == {
        "leadMinutes": 30,
        "graceMinutes": 30,
        "maxWindowHours": 12.0,
        "timezone": "UTC",
    }
    change = {
        "leadMinutes": 10,
        "graceMinutes": 5,
        "maxWindowHours": 2,
        "timezone": "Europe/Berlin",
    }
    for person in (fresh.dispatcher, fresh.tech, fresh.auditor):
        body = await running.gql(POLICY, {"input": change}, token=person.token)
        assert error_code(body) == "FORBIDDEN"
    data = await ok(running, POLICY, {"input": change}, fresh.admin.token)
    assert data["updateAccessWindowPolicy"]["timezone"] == "Europe/Berlin"
    for bad in ({"leadMinutes": -1}, {"maxWindowHours": 100}, {"timezone": "Mars/Olympus"}):
        body = await running.gql(POLICY, {"input": bad}, token=fresh.admin.token)
        assert error_code(body) == "BAD_USER_INPUT"
    # The new maximum applies: a 3-hour job is now too long.
    _, site_id = await make_customer(running, fresh)
    now = datetime.now(UTC)
    body = await running.gql(
        CREATE_WO,
        {
            "input": {
                "siteId": site_id,
                "title": "x",
                "scheduledStart": iso(now + timedelta(hours=1)),
                "scheduledEnd": iso(now + timedelta(hours=4)),
            }
        },
        token=fresh.dispatcher.token,
    )
    assert error_code(body) == "BAD_USER_INPUT"
    # The other organisation is untouched.
    data = await ok(running, READ_POLICY, {}, org.tech.token)
    assert data["accessWindowPolicy"]["leadMinutes"] == 30


async def test_invoice_lines_and_notes(running: Running, org: Org) -> None:
    job = await make_job(running, org, with_secret=False)
    line = {"description": "Cylinder", "quantity": "2", "unitPrice": "49.95"}
    for person, code in (
        (org.tech, "FORBIDDEN"),
        (org.sub, "NOT_FOUND"),
        (org.dispatcher_r2, "NOT_FOUND"),
    ):
        body = await running.gql(
            ADD_LINE, {"w": job.work_order_id, "input": line}, token=person.token
        )
        assert error_code(body) == code, person
    data = await ok(
        running, ADD_LINE, {"w": job.work_order_id, "input": line}, org.dispatcher.token
    )
    lines = data["addInvoiceLine"]["invoiceLines"]
    assert lines[0]["quantity"] == "2" and lines[0]["unitPrice"] == "49.95"
    assert lines[0]["total"] == "99.90"
    for bad in ({"quantity": "abc"}, {"unitPrice": "-1"}, {"unitPrice": "1.234"}):
        body = await running.gql(
            ADD_LINE, {"w": job.work_order_id, "input": dict(line, **bad)}, token=org.admin.token
        )
        assert error_code(body) == "BAD_USER_INPUT"
    body = await running.gql(REMOVE_LINE, {"id": lines[0]["id"]}, token=org.tech.token)
    assert error_code(body) == "FORBIDDEN"
    data = await ok(running, REMOVE_LINE, {"id": lines[0]["id"]}, org.admin.token)
    assert data["removeInvoiceLine"]["invoiceLines"] == []

    data = await ok(running, ADD_NOTE, {"w": job.work_order_id, "t": "Door sticks"}, org.tech.token)
    assert data["addWorkNote"]["workNotes"] == [
        {"text": "Door sticks", "author": {"id": org.tech.id}}
    ]
    body = await running.gql(ADD_NOTE, {"w": job.work_order_id, "t": "hi"}, token=org.tech2.token)
    assert error_code(body) == "NOT_FOUND"


async def test_get_access_context_over_grpc(running: Running, org: Org) -> None:
    job = await make_job(running, org)
    channel = ServiceChannel(running.grpc_target, running.pki.auth("secrets"), server="workorders")
    stub = workorders_pb2_grpc.WorkOrdersStub(channel.channel)
    try:
        reply = await channel.call(
            stub.GetAccessContext,
            workorders_pb2.GetAccessContextRequest(org_id=org.id, work_order_id=job.work_order_id),
        )
        assert reply.assignee_id == org.tech.id and reply.status == "DISPATCHED"
        assert reply.site_id == job.site_id and reply.region_id == org.r1
        assert reply.lead_seconds == 1800 and reply.grace_seconds == 1800
        assert list(reply.secret_ref_ids) == [job.secret_ref_id]
        assert reply.HasField("scheduled_start") and reply.HasField("scheduled_end")
        # Another organisation's id for the same job: not found.
        with pytest.raises(DoorwardError) as raised:
            await channel.call(
                stub.GetAccessContext,
                workorders_pb2.GetAccessContextRequest(
                    org_id=running.new_org().id, work_order_id=job.work_order_id
                ),
            )
        assert raised.value.code is ErrorCode.NOT_FOUND
    finally:
        await channel.close()
    # Only secrets re-checks jobs: another service's certificate is refused.
    other = ServiceChannel(running.grpc_target, running.pki.auth("identity"), server="workorders")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await workorders_pb2_grpc.WorkOrdersStub(other.channel).GetAccessContext(
                workorders_pb2.GetAccessContextRequest(
                    org_id=org.id, work_order_id=job.work_order_id
                )
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await other.close()
