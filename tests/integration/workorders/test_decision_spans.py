"""workorders' access decisions as `doorward.access.decide` spans (CONTRACT "Telemetry"): the
secret-access request and assignment, allowed and refused, each naming its audit event; a
refusal is no error; a policy refusal of a read gets a span of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from doorward_kit.pseudonym import pseudonym
from tests.fixtures.spans import memory_spans, pseudonym_key_set
from tests.integration.workorders.conftest import (
    ASSIGN,
    REQUEST_ACCESS,
    WORK_ORDER,
    Org,
    Running,
    error_code,
    eventually,
    make_job,
    ok,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def spans(running: Running) -> Iterator[InMemorySpanExporter]:
    """One in-memory exporter on the process's provider (added once), emptied per test; a
    pseudonym key as the secrets service would hand it over."""
    with pseudonym_key_set(b"p" * 32):
        yield memory_spans("workorders-tests")


def _decides(memory: InMemorySpanExporter, action: str) -> list[ReadableSpan]:
    return [
        s
        for s in memory.get_finished_spans()
        if s.name == "doorward.access.decide"
        and (s.attributes or {}).get("doorward.access.action") == action
    ]


async def test_secret_access_requests_are_decisions_naming_their_audit_events(
    running: Running, org: Org, spans: InMemorySpanExporter
) -> None:
    job = await make_job(running, org)
    variables = {"w": job.work_order_id, "s": job.secret_ref_id}
    await ok(running, REQUEST_ACCESS, variables, org.tech.token)
    (allowed,) = _decides(spans, "secret.access.request")
    attributes = dict(allowed.attributes or {})
    await eventually(lambda: bool(running.audit.of(org.id, "secret.access.request")))
    (event,) = running.audit.of(org.id, "secret.access.request")
    assert attributes == {
        "doorward.org.id": org.id,
        "doorward.access.action": "secret.access.request",
        "doorward.decision": "allow",
        "doorward.decision.reason": "in_window",
        "enduser.pseudo.id": pseudonym(org.tech.id),
        "doorward.work_order.id": job.work_order_id,
        "doorward.secret_ref.id": job.secret_ref_id,
        "doorward.audit.event_id": event.id,
    }
    assert event.trace_id == format(allowed.context.trace_id, "032x")

    spans.clear()
    body = await running.gql(REQUEST_ACCESS, variables, token=org.dispatcher.token)
    assert error_code(body) == "FORBIDDEN"
    (denied,) = _decides(spans, "secret.access.request")
    attributes = dict(denied.attributes or {})
    assert attributes["doorward.decision"] == "deny"
    assert attributes["doorward.decision.reason"] == "not_assigned"
    assert attributes["enduser.pseudo.id"] == pseudonym(org.dispatcher.id)
    assert denied.status.status_code is StatusCode.UNSET

    def denied_event() -> bool:
        return any(
            e.id == attributes["doorward.audit.event_id"]
            for e in running.audit.of(org.id, "secret.access.denied")
        )

    await eventually(denied_event)


async def test_assignment_decisions_say_why(
    running: Running, org: Org, spans: InMemorySpanExporter
) -> None:
    job = await make_job(running, org, dispatch=False)
    spans.clear()
    # A technician may not assign at all; an inactive assignee is refused as deactivated.
    body = await running.gql(
        ASSIGN, {"id": job.work_order_id, "a": org.tech2.id}, token=org.tech.token
    )
    assert error_code(body) in {"FORBIDDEN", "NOT_FOUND"}
    body = await running.gql(
        ASSIGN, {"id": job.work_order_id, "a": org.inactive_tech.id}, token=org.dispatcher.token
    )
    assert error_code(body) == "BAD_USER_INPUT"
    await ok(running, ASSIGN, {"id": job.work_order_id, "a": org.tech2.id}, org.dispatcher.token)
    reasons = [
        (
            (s.attributes or {})["doorward.decision"],
            (s.attributes or {})["doorward.decision.reason"],
        )
        for s in _decides(spans, "workorder.assign")
    ]
    assert reasons[1:] == [("deny", "deactivated"), ("allow", "policy")]
    assert reasons[0][0] == "deny" and reasons[0][1] in {"role_denied", "not_found"}
    assert all(
        s.status.status_code is StatusCode.UNSET for s in _decides(spans, "workorder.assign")
    )


async def test_a_refused_read_is_a_decision_span_of_its_own(
    running: Running, org: Org, spans: InMemorySpanExporter
) -> None:
    job = await make_job(running, org)
    spans.clear()
    # Another region's dispatcher: the read is refused (as not found) by the policy.
    body = await running.gql(WORK_ORDER, {"id": job.work_order_id}, token=org.dispatcher_r2.token)
    assert body["data"]["workOrder"] is None
    await asyncio.sleep(0)
    denials = [
        s
        for s in spans.get_finished_spans()
        if s.name == "doorward.access.decide"
        and (s.attributes or {}).get("doorward.decision") == "deny"
    ]
    assert denials, [s.name for s in spans.get_finished_spans()]
    attributes = dict(denials[0].attributes or {})
    assert attributes["doorward.decision.reason"] == "region_denied"
    assert attributes["enduser.pseudo.id"] == pseudonym(org.dispatcher_r2.id)
    assert attributes["doorward.access.action"] == "workorder.read"
