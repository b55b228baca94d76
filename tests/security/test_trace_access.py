"""Issue 13: traces in the graph are for AUDITOR and ADMIN of their own organisation only.

Audit serves `trace`, `traces`, `AuditEvent.trace` and `Trace.auditEvents` from the trace
store's read API; both sides check. Each attack is shown failing beside the honest use that
still works: another organisation's auditor gets nothing of these traces (not even through an
audit event of their own naming a foreign trace id), a technician gets nothing at all, and the
store's gRPC answers only audit's certificate carrying a reader's live token.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from doorward.traces.v1 import traces_pb2, traces_pb2_grpc

from doorward_kit.audit_client import AuditRecord, Outcome
from doorward_kit.auth import Role
from doorward_kit.grpc import ServiceChannel
from doorward_kit.telemetry import otlp_session
from tests.fixtures.pki import ServicePki
from tests.fixtures.tokens import TestTokenIssuer
from tests.integration.audit.harness import AuditHarness, record, running_audit
from tests.integration.traces.harness import Store, otlp_json, running_store

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ORG_A, ORG_B = "org-trace-a", "org-trace-b"
REFUSED = [Role.TECHNICIAN, Role.DISPATCHER, Role.SUBCONTRACTOR]

TRACE = """
query($id: ID!) {
  trace(traceId: $id) {
    traceId startedAt durationMs services
    spans { spanId parentSpanId service name kind startedAt durationMs status
            attributes { key value } events { name at attributes { key value } } }
    auditEvents { id action outcome traceId }
  }
}
"""

TRACES = """
query($filter: TraceFilter, $first: Int, $after: String) {
  traces(filter: $filter, first: $first, after: $after) {
    edges { cursor node { traceId services spans { name } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

EVENTS_WITH_TRACE = """
query { auditEvents(first: 50) { edges { node { id traceId trace { traceId
  spans { name } auditEvents { id } } } } } }
"""

OWN_HISTORY = """
query($reps: [_Any!]!) {
  _entities(representations: $reps) { ... on User { accessHistory { id trace { traceId } } } }
}
"""


@dataclass
class World:
    store: Store
    audit: AuditHarness
    issuer: TestTokenIssuer
    denied: str  # org A: a denied reveal
    allowed: str  # org A: an allowed reveal
    foreign: str  # org B's own trace
    technician: str  # org A's technician: actor of both reveals
    event_a: AuditRecord  # org A's audit event of the denied reveal
    forged: AuditRecord  # org B's audit event naming org A's denied trace

    def token(self, org: str = ORG_A, role: Role = Role.AUDITOR, **kw: object) -> str:
        return self.issuer.token(org_id=org, roles=(role,), **kw)  # type: ignore[arg-type]


def _reveal(trace_id: str, org: str, decision: str, reason: str, event_id: str) -> dict:
    gateway = uuid.uuid4().hex[:16]
    secrets = uuid.uuid4().hex[:16]
    return {
        "doorward-gateway": [
            {
                "trace_id": trace_id,
                "span_id": gateway,
                "name": "POST /graphql",
                "attributes": {"doorward.org.id": org, "doorward.operation.name": "Reveal"},
                "duration_ms": 9,
            }
        ],
        "doorward-secrets": [
            {
                "trace_id": trace_id,
                "span_id": secrets,
                "parent": gateway,
                "name": "doorward.secret.reveal",
                "kind": 1,
                "offset_ms": 1,
                "attributes": {
                    "doorward.decision": decision,
                    "doorward.decision.reason": reason,
                    "doorward.work_order.id": "wo-7",
                    "doorward.audit.event_id": event_id,
                },
            }
        ],
    }


async def _export(store: Store, spans_by_service: dict) -> None:
    async with httpx.AsyncClient() as client:
        for service, spans in spans_by_service.items():
            answer = await client.post(f"{store.url}/v1/traces", json=otlp_json(service, spans))
            assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
async def world(postgres, tmp_path_factory) -> AsyncIterator[World]:
    pki = ServicePki(tmp_path_factory.mktemp("trace-access-pki"))
    issuer = TestTokenIssuer()
    async with (
        running_store(postgres, pki=pki, issuer=issuer) as store,
        running_audit(
            postgres,
            pki=pki,
            issuer=issuer,
            stack_overrides={"traces_grpc_port": store.grpc_port},
        ) as audit,
    ):
        technician = str(uuid.uuid4())
        denied, allowed, foreign = (uuid.uuid4().hex for _ in range(3))
        event_a = record(
            ORG_A,
            actor_id=technician,
            action="secret.reveal",
            outcome=Outcome.DENIED,
            trace_id=denied,
        )
        allowed_event = record(ORG_A, actor_id=technician, action="secret.reveal", trace_id=allowed)
        forged = record(ORG_B, action="secret.reveal", trace_id=denied)
        await audit.append([event_a, allowed_event, forged])
        await _export(store, _reveal(denied, ORG_A, "deny", "consumed", event_a.id))
        await _export(store, _reveal(allowed, ORG_A, "allow", "assigned", allowed_event.id))
        await _export(store, _reveal(foreign, ORG_B, "deny", "not_assigned", forged.id))
        yield World(store, audit, issuer, denied, allowed, foreign, technician, event_a, forged)


def _ids(answer: dict) -> list[str]:
    return [e["node"]["traceId"] for e in answer["data"]["traces"]["edges"]]


def _code(answer: dict) -> str:
    return answer["errors"][0]["extensions"]["code"]


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
async def test_readers_see_their_trace_with_spans_and_audit_events(world: World, role: Role):
    answer = await world.audit.graphql(TRACE, world.token(role=role), {"id": world.denied})
    assert "errors" not in answer, answer
    trace = answer["data"]["trace"]
    assert trace["traceId"] == world.denied
    assert sorted(trace["services"]) == ["doorward-gateway", "doorward-secrets"]
    by_name = {s["name"]: s for s in trace["spans"]}
    decision = by_name["doorward.secret.reveal"]
    assert decision["parentSpanId"] == by_name["POST /graphql"]["spanId"]
    attributes = {a["key"]: a["value"] for a in decision["attributes"]}
    assert attributes["doorward.decision"] == "deny"
    assert attributes["doorward.audit.event_id"] == world.event_a.id
    assert decision["status"] == "UNSET" and decision["kind"] == "INTERNAL"
    # from the trace back to the audit trail: org A's event only, not org B's forged one
    assert [e["id"] for e in trace["auditEvents"]] == [world.event_a.id]


async def test_traces_filter_by_decision_actor_and_service_with_pages(world: World) -> None:
    token = world.token()
    deny = await world.audit.graphql(TRACES, token, {"filter": {"decision": "DENY"}})
    assert _ids(deny) == [world.denied]
    allow = await world.audit.graphql(TRACES, token, {"filter": {"decision": "ALLOW"}})
    assert _ids(allow) == [world.allowed]
    reason = await world.audit.graphql(
        TRACES, token, {"filter": {"reason": "consumed", "workOrderId": "wo-7"}}
    )
    assert _ids(reason) == [world.denied]
    actor = await world.audit.graphql(TRACES, token, {"filter": {"actorId": world.technician}})
    assert sorted(_ids(actor)) == sorted([world.denied, world.allowed])
    nobody = await world.audit.graphql(TRACES, token, {"filter": {"actorId": str(uuid.uuid4())}})
    assert _ids(nobody) == []
    service = await world.audit.graphql(TRACES, token, {"filter": {"service": "secrets"}})
    assert sorted(_ids(service)) == sorted([world.denied, world.allowed])
    first = await world.audit.graphql(TRACES, token, {"first": 1})
    page = first["data"]["traces"]
    assert page["pageInfo"]["hasNextPage"] is True
    second = await world.audit.graphql(
        TRACES, token, {"first": 1, "after": page["pageInfo"]["endCursor"]}
    )
    assert second["data"]["traces"]["pageInfo"]["hasNextPage"] is False
    assert sorted(_ids(first) + _ids(second)) == sorted([world.denied, world.allowed])
    spans = first["data"]["traces"]["edges"][0]["node"]["spans"]
    assert {s["name"] for s in spans} == {"POST /graphql", "doorward.secret.reveal"}


async def test_audit_event_trace_resolves_for_its_own_organisation(world: World) -> None:
    answer = await world.audit.graphql(EVENTS_WITH_TRACE, world.token())
    assert "errors" not in answer, answer
    nodes = {e["node"]["id"]: e["node"] for e in answer["data"]["auditEvents"]["edges"]}
    resolved = nodes[world.event_a.id]["trace"]
    assert resolved["traceId"] == world.denied
    assert {"doorward.secret.reveal"} <= {s["name"] for s in resolved["spans"]}
    assert world.event_a.id in [e["id"] for e in resolved["auditEvents"]]


async def test_another_organisations_auditor_gets_nothing_of_these_traces(world: World) -> None:
    token_b = world.token(ORG_B)
    # by id: the same null as an unknown id
    for trace_id in (world.denied, world.allowed, uuid.uuid4().hex):
        answer = await world.audit.graphql(TRACE, token_b, {"id": trace_id})
        assert answer["data"]["trace"] is None and "errors" not in answer, answer
    # listed: only their own trace, whatever the filter
    for flt in ({}, {"decision": "DENY"}, {"workOrderId": "wo-7"}, {"actorId": world.technician}):
        answer = await world.audit.graphql(TRACES, token_b, {"filter": flt})
        assert world.denied not in _ids(answer) and world.allowed not in _ids(answer), flt
    own = await world.audit.graphql(TRACES, token_b, {"filter": {"decision": "DENY"}})
    assert _ids(own) == [world.foreign]
    # their own audit event naming org A's trace id resolves to nothing
    events = await world.audit.graphql(EVENTS_WITH_TRACE, token_b)
    nodes = {e["node"]["id"]: e["node"] for e in events["data"]["auditEvents"]["edges"]}
    assert nodes[world.forged.id]["traceId"] == world.denied
    assert nodes[world.forged.id]["trace"] is None
    # and the honest reader of org A still sees it
    honest = await world.audit.graphql(TRACE, world.token(), {"id": world.denied})
    assert honest["data"]["trace"]["traceId"] == world.denied


@pytest.mark.parametrize("role", REFUSED)
async def test_other_roles_get_nothing_at_all(world: World, role: Role) -> None:
    token = world.token(role=role, user_id=world.technician)
    by_id = await world.audit.graphql(TRACE, token, {"id": world.denied})
    assert by_id["data"] is None or by_id["data"]["trace"] is None
    assert _code(by_id) == "FORBIDDEN"
    listed = await world.audit.graphql(TRACES, token, {"filter": {"decision": "DENY"}})
    assert listed["data"] is None and _code(listed) == "FORBIDDEN"
    # their own access history stays theirs to read, but not the traces behind it
    reps = [{"__typename": "User", "id": world.technician}]
    history = await world.audit.graphql(OWN_HISTORY, token, {"reps": reps})
    events = history["data"]["_entities"][0]["accessHistory"]
    assert events and all(e["trace"] is None for e in events)
    assert _code(history) == "FORBIDDEN"


def _stub(world: World, service: str) -> tuple[ServiceChannel, traces_pb2_grpc.TracesStub]:
    channel = ServiceChannel(
        world.store.grpc_target, world.store.pki.auth(service), server="traces"
    )
    return channel, traces_pb2_grpc.TracesStub(channel.channel)


async def _get(stub: traces_pb2_grpc.TracesStub, trace_id: str, token: str | None):
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return await stub.GetTrace(
        traces_pb2.GetTraceRequest(trace_id=trace_id), metadata=metadata, timeout=5
    )


async def test_the_store_answers_only_audit_acting_for_a_reader_of_that_organisation(
    world: World,
) -> None:
    audit_channel, audit = _stub(world, "audit")
    wo_channel, workorders = _stub(world, "workorders")
    try:
        # honest: audit's certificate with org A's auditor
        answer = await _get(audit, world.denied, world.token())
        assert answer.trace.summary.trace_id == world.denied
        attacks = [
            (workorders, world.token(), grpc.StatusCode.PERMISSION_DENIED),  # wrong service
            (audit, None, grpc.StatusCode.UNAUTHENTICATED),  # no user to act for
            (audit, world.token(role=Role.TECHNICIAN), grpc.StatusCode.PERMISSION_DENIED),
            (audit, world.token(ORG_B), grpc.StatusCode.NOT_FOUND),  # foreign = unknown
            (
                audit,
                TestTokenIssuer().token(org_id=ORG_A, roles=(Role.AUDITOR,)),
                grpc.StatusCode.UNAUTHENTICATED,
            ),  # a token identity never signed
            (audit, world.token(scope="restricted"), grpc.StatusCode.PERMISSION_DENIED),
        ]
        for stub, token, code in attacks:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _get(stub, world.denied, token)
            assert refused.value.code() is code, (token, refused.value.details())
        listed = await audit.ListTraces(
            traces_pb2.ListTracesRequest(decision=traces_pb2.DENY, first=10),
            metadata=(("authorization", f"Bearer {world.token(ORG_B)}"),),
            timeout=5,
        )
        assert [t.trace_id for t in listed.traces] == [world.foreign]
    finally:
        await audit_channel.close()
        await wo_channel.close()


async def test_a_planted_span_cannot_move_a_trace_into_another_organisation(world: World) -> None:
    """Whoever reaches the receiver could send a span naming org B with org A's trace id, before
    or after A's own spans: the trace then belongs to nobody, never to B."""
    for planted_first in (True, False):
        trace_id = uuid.uuid4().hex
        own = _reveal(trace_id, ORG_A, "deny", "consumed", str(uuid.uuid4()))
        plant = {
            "evil": [
                {
                    "trace_id": trace_id,
                    "span_id": uuid.uuid4().hex[:16],
                    "name": "planted",
                    "attributes": {"doorward.org.id": ORG_B},
                }
            ]
        }
        for batch in (plant, own) if planted_first else (own, plant):
            await _export(world.store, batch)
        for org in (ORG_B, ORG_A):
            answer = await world.audit.graphql(TRACE, world.token(org), {"id": trace_id})
            assert answer["data"]["trace"] is None, (planted_first, org)
    # spans of one trace naming both organisations, whatever the order: nobody's either
    trace_id = uuid.uuid4().hex
    both = _reveal(trace_id, ORG_A, "deny", "consumed", str(uuid.uuid4()))
    both["doorward-secrets"][0]["attributes"]["doorward.org.id"] = ORG_B
    await _export(world.store, both)
    answer = await world.audit.graphql(TRACE, world.token(ORG_B), {"id": trace_id})
    assert answer["data"]["trace"] is None
    # the honest trace of the world is still A's
    honest = await world.audit.graphql(TRACE, world.token(), {"id": world.denied})
    assert honest["data"]["trace"]["traceId"] == world.denied


async def test_the_receiver_takes_spans_only_from_doorward_certificates(
    postgres, tmp_path_factory
) -> None:
    """Under mutual TLS (what `doorward up` runs) nobody without a certificate of the Doorward
    CA can send a span at all; the standard exporter with a service's certificate can."""
    import asyncio
    import ssl

    import asyncpg
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    root = tmp_path_factory.mktemp("receiver-tls")
    pki, stranger = ServicePki(root / "ours"), ServicePki(root / "theirs")
    async with running_store(postgres, pki=pki, traces_receiver_tls=True) as store:
        assert store.url.startswith("https://")
        folder = pki.folder("secrets")

        def export() -> str:
            provider = TracerProvider(
                resource=Resource.create({"service.name": "doorward-secrets"})
            )
            exporter = OTLPSpanExporter(
                endpoint=f"{store.url}/v1/traces",
                certificate_file=str(folder / "ca.pem"),
                client_certificate_file=str(folder / "identity.pem"),
                client_key_file=str(folder / "identity.pem"),
                session=otlp_session(),  # as every Doorward process builds it
            )
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            with provider.get_tracer("t").start_as_current_span("honest") as span:
                span.set_attribute("doorward.org.id", ORG_A)
                trace_id = format(span.get_span_context().trace_id, "032x")
            provider.shutdown()
            return trace_id

        honest = await asyncio.to_thread(export)
        body = otlp_json("evil", [{"trace_id": uuid.uuid4().hex, "span_id": "1" * 16, "name": "x"}])
        trust_ours = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        with_theirs = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        with_theirs.load_cert_chain(str(stranger.folder("secrets") / "identity.pem"))
        for verify in (trust_ours, with_theirs):
            async with httpx.AsyncClient(verify=verify) as client:
                with pytest.raises(httpx.HTTPError):
                    await client.post(f"{store.url}/v1/traces", json=body)
        plain = store.url.replace("https://", "http://")
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.HTTPError):
                answer = await client.post(f"{plain}/v1/traces", json=body)
                answer.raise_for_status()
        conn = await asyncpg.connect(store.dsn)
        try:
            names = [r["name"] for r in await conn.fetch("SELECT name FROM spans")]
            stored = await conn.fetchval("SELECT org_id FROM traces WHERE trace_id = $1", honest)
        finally:
            await conn.close()
        assert names == ["honest"] and stored == ORG_A
