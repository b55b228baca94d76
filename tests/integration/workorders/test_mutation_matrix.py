"""Every mutation on someone else's ground is refused: the other region's dispatcher, another
technician, an auditor and another organisation's admin; the owner of the ground is allowed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.workorders.conftest import (
    ASSIGN,
    ATTACH,
    CANCEL,
    COMPLETE,
    CREATE_SITE,
    CREATE_WO,
    DISPATCH,
    PREPARE_UPLOAD,
    REQUEST_ACCESS,
    START,
    UPDATE,
    Job,
    Org,
    Running,
    error_code,
    iso,
    make_job,
)

pytestmark = pytest.mark.integration

SITE = "query($id: ID!) { site(id: $id) { id } }"
ADD_LINE = """mutation($w: ID!) { addInvoiceLine(workOrderId: $w,
  input: {description: "x", quantity: "1", unitPrice: "1"}) { id } }"""
ADD_NOTE = 'mutation($w: ID!) { addWorkNote(workOrderId: $w, text: "x") { id } }'
EXPORT = "mutation($c: ID!) { exportCustomerData(customerId: $c) }"
ERASE = 'mutation($c: ID!) { eraseCustomer(customerId: $c, reason: "asked") { id } }'
RESTRICT = 'mutation($c: ID!) { restrictCustomer(customerId: $c, reason: "asked") { id } }'
UNRESTRICT = 'mutation($c: ID!) { unrestrictCustomer(customerId: $c, reason: "asked") { id } }'
HOLD = """mutation($w: ID!) { placeLegalHold(targetType: WORK_ORDER, targetId: $w,
  reason: "litigation") { id } }"""
ROTATE = "mutation($s: ID!) { prepareSecretRotation(secretRefId: $s) { uploadToken } }"
BREAK_GLASS = """mutation($s: ID!) { requestBreakGlassAccess(secretRefId: $s,
  reason: "because the building is on fire", otp: "123456") { id } }"""

Case = tuple[str, str, Callable[[Job, Org], dict[str, Any]]]


def _later() -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "scheduledStart": iso(now + timedelta(hours=1)),
        "scheduledEnd": iso(now + timedelta(hours=2)),
    }


CASES: list[Case] = [
    (
        "createSite",
        CREATE_SITE,
        lambda j, o: {"input": {"customerId": j.customer_id, "address": "x", "regionId": o.r1}},
    ),
    ("createWorkOrder", CREATE_WO, lambda j, o: {"input": {"siteId": j.site_id, "title": "x"}}),
    ("updateWorkOrder", UPDATE, lambda j, o: {"id": j.work_order_id, "input": _later()}),
    ("assignWorkOrder", ASSIGN, lambda j, o: {"id": j.work_order_id, "a": o.tech2.id}),
    ("dispatchWorkOrder", DISPATCH, lambda j, o: {"id": j.work_order_id}),
    ("startWorkOrder", START, lambda j, o: {"id": j.work_order_id}),
    ("completeWorkOrder", COMPLETE, lambda j, o: {"id": j.work_order_id}),
    ("cancelWorkOrder", CANCEL, lambda j, o: {"id": j.work_order_id, "r": "x"}),
    ("attachSecret", ATTACH, lambda j, o: {"w": j.work_order_id, "s": j.secret_ref_id}),
    ("prepareSecretUpload", PREPARE_UPLOAD, lambda j, o: {"s": j.site_id, "k": "OTHER", "l": "x"}),
    ("prepareSecretRotation", ROTATE, lambda j, o: {"s": j.secret_ref_id}),
    (
        "requestSecretAccess",
        REQUEST_ACCESS,
        lambda j, o: {"w": j.work_order_id, "s": j.secret_ref_id},
    ),
    ("requestBreakGlassAccess", BREAK_GLASS, lambda j, o: {"s": j.secret_ref_id}),
    ("addInvoiceLine", ADD_LINE, lambda j, o: {"w": j.work_order_id}),
    ("addWorkNote", ADD_NOTE, lambda j, o: {"w": j.work_order_id}),
    ("exportCustomerData", EXPORT, lambda j, o: {"c": j.customer_id}),
    ("eraseCustomer", ERASE, lambda j, o: {"c": j.customer_id}),
    ("restrictCustomer", RESTRICT, lambda j, o: {"c": j.customer_id}),
    ("unrestrictCustomer", UNRESTRICT, lambda j, o: {"c": j.customer_id}),
    ("placeLegalHold", HOLD, lambda j, o: {"w": j.work_order_id}),
    ("site", SITE, lambda j, o: {"id": j.site_id}),
]


@pytest.mark.parametrize(("name", "document", "variables"), CASES, ids=[c[0] for c in CASES])
async def test_outsiders_are_refused(
    running: Running,
    org: Org,
    name: str,
    document: str,
    variables: Callable[[Job, Org], dict[str, Any]],
) -> None:
    job = await make_job(running, org)
    outsiders = {
        "dispatcher of another region": org.dispatcher_r2,
        "another technician": org.tech2,
        "technician of another region": org.tech_r2,
        "auditor": org.auditor,
        "admin of another organisation": running.new_org().admin,
    }
    grants, uploads = len(running.secrets.grants), len(running.secrets.uploads)
    for who, person in outsiders.items():
        body = await running.gql(document, variables(job, org), token=person.token)
        assert error_code(body) in ("FORBIDDEN", "NOT_FOUND"), (name, who, body)
        assert not (body.get("data") or {}).get(name), (name, who)
    # Nothing reached the secrets service on their behalf.
    assert len(running.secrets.grants) == grants and len(running.secrets.uploads) == uploads
    # And the job is unchanged.
    body = await running.gql(
        "query($id: ID!) { workOrder(id: $id) { status assignee { id } } }",
        {"id": job.work_order_id},
        token=org.admin.token,
    )
    assert body["data"]["workOrder"] == {"status": "DISPATCHED", "assignee": {"id": org.tech.id}}


async def test_junk_ids_are_refused_cleanly(running: Running, org: Org) -> None:
    """Phone-like or junk ids get NOT_FOUND / BAD_USER_INPUT, never an internal error."""
    for junk in ("+44 20 7946 0000", "someone@example.com", "not-an-id"):
        body = await running.gql(REQUEST_ACCESS, {"w": junk, "s": junk}, token=org.tech.token)
        assert error_code(body) == "NOT_FOUND", body
        body = await running.gql(EXPORT, {"c": junk}, token=org.admin.token)
        assert error_code(body) == "NOT_FOUND", body
        body = await running.gql(
            'mutation($r: ID!) { createCustomer(input: {name: "n", regionId: $r}) { id } }',
            {"r": junk},
            token=org.admin.token,
        )
        assert error_code(body) == "BAD_USER_INPUT", body
