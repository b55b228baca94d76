"""Access decisions of the secrets service as spans (CONTRACT "Telemetry"), through the real
gRPC + REST on real OpenBao: names, attributes, reasons, the audit event they name, a denial
that is not an error, the Vault call in the same trace, and the metrics they count."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from doorward.secrets.v1 import secrets_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from doorward_kit.metrics import render
from doorward_kit.pseudonym import pseudonym
from doorward_kit.span_policy import filter_attributes
from tests.fixtures.spans import memory_spans
from tests.integration.secrets.conftest import SecretsHarness

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def spans(secrets_svc: SecretsHarness) -> Iterator[InMemorySpanExporter]:
    """One in-memory exporter on the process's provider (added once: the SDK cannot remove a
    processor), emptied for each test."""
    yield memory_spans(None)


def _decisions(memory: InMemorySpanExporter, name: str, **match: str) -> list[ReadableSpan]:
    return [
        s
        for s in memory.get_finished_spans()
        if s.name == name and all((s.attributes or {}).get(k) == v for k, v in match.items())
    ]


def _attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def _wait(
    memory: InMemorySpanExporter, name: str, timeout: float = 5.0, **match: str
) -> ReadableSpan:
    for _ in range(int(timeout / 0.05)):
        found = _decisions(memory, name, **match)
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {name} {match}: {[s.name for s in memory.get_finished_spans()]}")


async def test_a_reveal_and_its_replay_are_decision_spans(
    secrets_svc: SecretsHarness, spans: InMemorySpanExporter, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "span-canary-4711")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)

    issued = await _wait(spans, "doorward.grant.issue", **{"doorward.grant.id": grant.id})
    grant_event = await h.audit.wait_for(org_id, "secret.access.grant")
    assert _attrs(issued) == {
        "doorward.org.id": org_id,
        "doorward.decision": "allow",
        "doorward.decision.reason": "in_window",
        "enduser.pseudo.id": pseudonym(job.user_id),
        "doorward.work_order.id": job.work_order_id,
        "doorward.secret_ref.id": ref_id,
        "doorward.grant.id": grant.id,
        "doorward.audit.event_id": grant_event.id,
    }

    ok = await h.reveal(grant, job.token)
    assert ok.status_code == 200
    reveal = await _wait(spans, "doorward.secret.reveal", **{"doorward.grant.id": grant.id})
    (allowed,) = h.audit.of(org_id, "secret.reveal")
    attributes = _attrs(reveal)
    assert attributes["doorward.decision"] == "allow"
    assert attributes["doorward.decision.reason"] == "in_window"
    assert attributes["doorward.audit.event_id"] == allowed.id
    assert attributes["doorward.work_order.id"] == job.work_order_id
    assert attributes["doorward.secret_ref.id"] == ref_id
    # The pseudonym is keyed (from Vault): never the user id itself.
    assert attributes["enduser.pseudo.id"] == pseudonym(job.user_id) != ""
    assert job.user_id not in str(attributes)
    # The audit event and the span share the trace; Vault's unwrap is inside the decision.
    trace_id = format(reveal.context.trace_id, "032x")
    assert allowed.trace_id == trace_id
    (unwrap,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == "vault.unwrap" and s.context.trace_id == reveal.context.trace_id
    ]
    assert unwrap.parent is not None and unwrap.parent.span_id == reveal.context.span_id
    # Nothing the convention sets is dropped on export; no value anywhere.
    assert filter_attributes(attributes) == attributes
    assert "span-canary-4711" not in str([s.to_json() for s in spans.get_finished_spans()])

    again = await h.reveal(grant, job.token)
    assert again.status_code == 410
    denied_event = await h.audit.wait_for(org_id, "secret.reveal.denied", reason="used")
    replay = _decisions(spans, "doorward.secret.reveal", **{"doorward.decision": "deny"})
    replay = [s for s in replay if _attrs(s).get("doorward.grant.id") == grant.id]
    assert len(replay) == 1
    assert _attrs(replay[0])["doorward.decision.reason"] == "consumed"
    assert _attrs(replay[0])["doorward.audit.event_id"] == denied_event.id
    # A denial is an answer, not a fault.
    assert replay[0].status.status_code is StatusCode.UNSET

    body, _ = render("application/openmetrics-text")
    text = body.decode()
    assert 'doorward_secret_reveals_total{decision="deny",reason="consumed"}' in text
    assert 'doorward_secret_grants_total{decision="allow",reason="in_window"}' in text
    assert "doorward_vault_request_duration_seconds_bucket" in text
    assert f'trace_id="{trace_id}"' in text or "trace_id=" in text


async def test_refused_grants_say_why(
    secrets_svc: SecretsHarness, spans: InMemorySpanExporter, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "refused-grant-canary")
    done = await h.job(org_id, ref_id, site_id, status="COMPLETED")
    with pytest.raises(grpc.aio.AioRpcError):
        await h.grant(done, ref_id)
    span = await _wait(
        spans, "doorward.grant.issue", **{"doorward.work_order.id": done.work_order_id}
    )
    assert _attrs(span)["doorward.decision"] == "deny"
    assert _attrs(span)["doorward.decision.reason"] == "wrong_status"
    assert span.status.status_code is StatusCode.UNSET
    event = await h.audit.wait_for(org_id, "secret.access.denied")
    assert _attrs(span)["doorward.audit.event_id"] == event.id

    # Someone else's job: not assigned.
    job = await h.job(org_id, ref_id, site_id)
    intruder = h.token(str(uuid.uuid4()), org_id)
    with pytest.raises(grpc.aio.AioRpcError):
        await h.grant(job, ref_id, token=intruder)
    span = await _wait(
        spans, "doorward.grant.issue", **{"doorward.work_order.id": job.work_order_id}
    )
    assert _attrs(span)["doorward.decision.reason"] == "not_assigned"

    # Outside the window the caller asked for.
    late = datetime.now(UTC) + timedelta(hours=3)
    with pytest.raises(grpc.aio.AioRpcError):
        await h.grant(job, ref_id, window_start=late, window_end=late + timedelta(hours=1))
    outside = _decisions(
        spans,
        "doorward.grant.issue",
        **{
            "doorward.work_order.id": job.work_order_id,
            "doorward.decision.reason": "outside_window",
        },
    )
    assert len(outside) == 1


async def test_revocation_is_a_span_per_grant_naming_its_holder(
    secrets_svc: SecretsHarness, spans: InMemorySpanExporter, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "revoke-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    await h.call(
        "RevokeGrants",
        secrets_pb2.RevokeGrantsRequest(
            org_id=org_id, work_order_id=job.work_order_id, reason="reassigned"
        ),
    )
    span = await _wait(spans, "doorward.grant.revoke", **{"doorward.grant.id": grant.id})
    event = await h.audit.wait_for(org_id, "secret.grant.revoke")
    assert _attrs(span) == {
        "doorward.org.id": org_id,
        "doorward.decision": "deny",
        "doorward.decision.reason": "not_assigned",
        "enduser.pseudo.id": pseudonym(job.user_id),
        "doorward.work_order.id": job.work_order_id,
        "doorward.secret_ref.id": ref_id,
        "doorward.grant.id": grant.id,
        "doorward.audit.event_id": event.id,
    }


async def test_a_grant_that_runs_out_is_reported_once_as_expired(
    secrets_svc: SecretsHarness, spans: InMemorySpanExporter, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "expiry-canary")
    job = await h.job(org_id, ref_id, site_id)
    soon = datetime.now(UTC) + timedelta(seconds=3)
    grant = await h.grant(job, ref_id, window_end=soon)
    span = await _wait(
        spans, "doorward.grant.expire", timeout=10.0, **{"doorward.grant.id": grant.id}
    )
    event = await h.audit.wait_for(org_id, "secret.grant.expire")
    assert _attrs(span)["doorward.decision"] == "deny"
    assert _attrs(span)["doorward.decision.reason"] == "expired"
    assert _attrs(span)["doorward.audit.event_id"] == event.id
    await asyncio.sleep(1.2)  # two more sweeps
    assert len(_decisions(spans, "doorward.grant.expire", **{"doorward.grant.id": grant.id})) == 1
    assert len(h.audit.of(org_id, "secret.grant.expire")) == 1


async def test_only_workorders_and_identity_get_the_pseudonym_key(
    secrets_svc: SecretsHarness,
) -> None:
    h = secrets_svc
    for caller in ("workorders", "identity"):
        answer = await h.call(
            "GetPseudonymKey", secrets_pb2.GetPseudonymKeyRequest(), caller=caller
        )
        assert len(answer.key) >= 32
    for caller in ("gateway", "audit"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.call("GetPseudonymKey", secrets_pb2.GetPseudonymKeyRequest(), caller=caller)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
