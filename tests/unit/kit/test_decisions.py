"""The access-decision span convention (doorward_kit.decisions) and the pseudonym."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from doorward_kit import decisions
from doorward_kit.audit_client import AuditRecord, Outcome
from doorward_kit.auth import Principal, Role, TokenScope
from doorward_kit.decisions import Reason, SpanName, decision_span, reason_of
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.metrics import render
from doorward_kit.policy import Action, PolicyDenied, Resource, authorize, decide
from doorward_kit.pseudonym import current_pseudonym_key, pseudonym, set_pseudonym_key
from doorward_kit.span_policy import filter_attributes
from doorward_kit.telemetry import setup_telemetry

pytestmark = pytest.mark.unit

KEY = b"k" * 32
USER = "3f0c2a4e-0000-4000-8000-000000000001"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # With the library instrumentations, as every process (and the integration tests sharing
    # this process) has them: telemetry is set up once per process.
    setup_telemetry("unit-decisions")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    provider.add_span_processor(processor)
    previous = current_pseudonym_key()
    set_pseudonym_key(KEY)
    try:
        yield memory
    finally:
        set_pseudonym_key(previous)
        memory.clear()
        processor.shutdown()


def _only(memory: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in memory.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in memory.get_finished_spans()]
    return found[0]


def test_an_allow_carries_the_convention_and_its_audit_event(
    spans: InMemorySpanExporter,
) -> None:
    with decision_span(
        SpanName.SECRET_REVEAL, actor_id=USER, work_order_id="wo-1", secret_ref_id="sr-1"
    ) as decision:
        decision.ids(grant_id="g-1")
        record = AuditRecord(org_id="o", actor_id=USER, action="secret.reveal", outcome="ALLOWED")
        decisions.note_audit_event(record.id, record.outcome)
        decision.allow(Reason.IN_WINDOW)
    span = _only(spans, "doorward.secret.reveal")
    assert dict(span.attributes or {}) == {
        "doorward.decision": "allow",
        "doorward.decision.reason": "in_window",
        "enduser.pseudo.id": pseudonym(USER),
        "doorward.work_order.id": "wo-1",
        "doorward.secret_ref.id": "sr-1",
        "doorward.grant.id": "g-1",
        "doorward.audit.event_id": record.id,
    }
    assert span.status.status_code is StatusCode.UNSET
    # Every attribute the convention sets survives the export allow-list.
    assert filter_attributes(span.attributes) == dict(span.attributes or {})


def test_a_denial_is_not_an_error_and_names_the_denied_event(
    spans: InMemorySpanExporter,
) -> None:
    class Denied(DoorwardError):
        reason = "status_completed"

    allowed = AuditRecord(org_id="o", actor_id=USER, action="a.b", outcome=Outcome.ALLOWED)
    denied = AuditRecord(org_id="o", actor_id=USER, action="a.c", outcome=Outcome.DENIED)
    with pytest.raises(Denied), decision_span(SpanName.GRANT_ISSUE, actor_id=USER):
        decisions.note_audit_event(allowed.id, allowed.outcome)
        decisions.note_audit_event(denied.id, denied.outcome)
        raise Denied(ErrorCode.OUTSIDE_ACCESS_WINDOW, "no")
    span = _only(spans, "doorward.grant.issue")
    attributes = dict(span.attributes or {})
    assert attributes["doorward.decision"] == "deny"
    assert attributes["doorward.decision.reason"] == "wrong_status"
    assert attributes["doorward.audit.event_id"] == denied.id
    assert span.status.status_code is StatusCode.UNSET
    assert not span.events  # no exception event: its message could quote input


def test_a_fault_is_an_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(DoorwardError), decision_span(SpanName.SECRET_REVEAL) as decision:
        decision.deny(Reason.VAULT_ERROR)
        raise DoorwardError(ErrorCode.UNAVAILABLE, "vault down")
    span = _only(spans, "doorward.secret.reveal")
    assert (span.attributes or {})["doorward.decision.reason"] == "vault_error"
    assert span.status.status_code is StatusCode.ERROR


def test_record_denial_inside_a_decision_adds_no_second_span(
    spans: InMemorySpanExporter,
) -> None:
    with decision_span(SpanName.ACCESS_DECIDE, action="workorder.assign") as decision:
        decisions.record_denial(SpanName.ACCESS_DECIDE, Reason.REGION_DENIED)
        decision.deny(Reason.REGION_DENIED)
    decisions.record_denial(SpanName.ACCESS_DECIDE, "not_assignee", action="workorder.read")
    names = [(s.attributes or {}).get("doorward.access.action") for s in spans.get_finished_spans()]
    assert names == ["workorder.assign", "workorder.read"]
    assert (spans.get_finished_spans()[1].attributes or {})[
        "doorward.decision.reason"
    ] == "not_assigned"


def test_reasons_come_from_the_fixed_list() -> None:
    assert reason_of("used") is Reason.CONSUMED
    assert reason_of("status_cancelled") is Reason.WRONG_STATUS
    assert reason_of("step_up_mismatch") is Reason.STEP_UP_INVALID
    assert reason_of("outside_window") is Reason.OUTSIDE_WINDOW
    assert reason_of("Robert'); DROP TABLE") is Reason.OTHER
    assert reason_of("") is Reason.OTHER


def test_no_key_no_pseudonym_and_the_pseudonym_is_keyed() -> None:
    previous = current_pseudonym_key()
    set_pseudonym_key(None)
    assert pseudonym(USER) == ""
    set_pseudonym_key(KEY)
    first = pseudonym(USER)
    set_pseudonym_key(b"x" * 32)
    try:
        assert first and pseudonym(USER) != first
        assert USER not in first and len(first) == 32
        with pytest.raises(ValueError):
            set_pseudonym_key(b"short")
    finally:
        set_pseudonym_key(previous)


def test_decisions_are_counted_by_decision_and_reason(spans: InMemorySpanExporter) -> None:
    with decision_span(SpanName.GRANT_ISSUE, actor_id=USER) as decision:
        decision.deny(Reason.OUTSIDE_WINDOW)
    body, _ = render("")
    text = body.decode()
    assert 'doorward_secret_grants_total{decision="deny",reason="outside_window"}' in text
    assert f'actor="{pseudonym(USER)}"' in text
    assert USER not in text


def _person(
    *roles: Role, regions: tuple[str, ...] = ("r1",), scope: TokenScope = TokenScope.FULL
) -> Principal:
    return Principal(
        user_id=USER,
        org_id="org-1",
        roles=frozenset(roles),
        region_ids=frozenset(regions),
        session_id="s",
        epoch=1,
        scope=scope,
    )


@pytest.mark.parametrize(
    ("who", "action", "resource", "code"),
    [
        (_person(Role.DISPATCHER), Action.WORKORDER_READ, Resource("org-2", "r1"), "other_org"),
        (
            _person(Role.DISPATCHER, scope=TokenScope.RESTRICTED),
            Action.WORKORDER_READ,
            Resource("org-1", "r1"),
            "restricted_session",
        ),
        (_person(Role.TECHNICIAN), Action.WORKORDER_ASSIGN, Resource("org-1", "r1"), "role_denied"),
        (_person(Role.DISPATCHER), Action.WORKORDER_READ, Resource("org-1", "r2"), "region_denied"),
        (
            _person(Role.TECHNICIAN),
            Action.WORKORDER_READ,
            Resource("org-1", "r1", assignee_id="someone-else"),
            "not_assigned",
        ),
        (
            _person(Role.TECHNICIAN),
            Action.SECRET_ACCESS_REQUEST,
            Resource("org-1", "r1", assignee_id=USER, in_window=False),
            "outside_window",
        ),
        (_person(Role.DISPATCHER), Action.WORKORDER_READ, Resource("org-1", "r1"), "policy"),
    ],
)
def test_policy_decisions_carry_a_reason_word(
    who: Principal, action: Action, resource: Resource, code: str
) -> None:
    decision = decide(who, action, resource)
    assert decision.code == code
    assert Reason(code)  # one of the fixed list


def test_a_policy_refusal_outside_a_decision_is_a_span_of_its_own(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(PolicyDenied) as refused:
        authorize(_person(Role.DISPATCHER), Action.WORKORDER_READ, Resource("org-1", "r2"))
    assert refused.value.code is ErrorCode.FORBIDDEN
    span = _only(spans, "doorward.access.decide")
    assert dict(span.attributes or {}) == {
        "doorward.org.id": "org-1",
        "doorward.access.action": "workorder.read",
        "doorward.decision": "deny",
        "doorward.decision.reason": "region_denied",
        "enduser.pseudo.id": pseudonym(USER),
    }
    # An allowed authorize adds nothing (reads are many; only refusals are news).
    spans.clear()
    authorize(_person(Role.DISPATCHER), Action.WORKORDER_READ, Resource("org-1", "r1"))
    assert not spans.get_finished_spans()
