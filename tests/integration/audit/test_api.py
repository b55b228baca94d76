"""Audit's GraphQL, gRPC and /export over real HTTP/gRPC: who may read (both sides), idempotent
ingestion, pagination, export."""

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc

from doorward_kit.audit_client import Outcome
from doorward_kit.auth import Role
from doorward_kit.grpc import INTERNAL_TOKEN_KEY
from services.audit.signing import load_public_key
from services.audit.verify import parse_jsonl, verify_dump
from tests.integration.audit.harness import PRODUCER, record, running_audit

pytestmark = pytest.mark.integration

READERS = [Role.AUDITOR, Role.ADMIN]
REFUSED = [Role.DISPATCHER, Role.TECHNICIAN, Role.SUBCONTRACTOR]

EVENTS = """
query($first: Int, $after: String, $actorId: ID, $workOrderId: ID, $action: String,
      $from: DateTime, $to: DateTime) {
  auditEvents(first: $first, after: $after, actorId: $actorId, workOrderId: $workOrderId,
              action: $action, from: $from, to: $to) {
    edges { cursor node { id seq action outcome actor { id } workOrder { id } secretRefId
            targetType targetId traceId sourceIp hash prevHash occurredAt
            details { key value } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

ENTITIES = """
query($reps: [_Any!]!) {
  _entities(representations: $reps) {
    ... on WorkOrder { id auditTrail { seq action } }
    ... on User { id accessHistory { seq action } }
  }
}
"""


@pytest.fixture(scope="module")
async def audit(postgres):
    async with running_audit(postgres) as harness:
        yield harness


@pytest.fixture(scope="module")
async def seeded(audit):
    actor = str(uuid.uuid4())
    work_order = str(uuid.uuid4())
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    records = [
        record(
            actor_id=actor if i % 2 == 0 else str(uuid.uuid4()),
            work_order_id=work_order if i < 4 else "",
            action="workorder.update" if i % 3 else "workorder.dispatch",
            occurred_at=base + timedelta(minutes=i),
            source_ip="10.1.2.3",
            trace_id=f"{i:032x}",
            details={"status": "DISPATCHED"},
        )
        for i in range(10)
    ]
    await audit.append(records)
    # Another organisation's events never show up.
    await audit.append([record(org_id="org-2", actor_id=actor, work_order_id=work_order)])
    return {"actor": actor, "work_order": work_order, "records": records}


@pytest.mark.parametrize("role", READERS)
async def test_readers_page_through_their_org_newest_first(audit, seeded, role):
    token = audit.token(roles=[role])
    seen = []
    after = None
    while True:
        body = await audit.graphql(EVENTS, token, {"first": 4, "after": after})
        conn = body["data"]["auditEvents"]
        seen += [e["node"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    ids = [n["id"] for n in seen]
    ours = [r.id for r in seeded["records"]]
    assert [i for i in ids if i in ours] == ours[::-1]
    assert all(n["seq"] > 0 for n in seen)
    assert seen[0]["seq"] > seen[-1]["seq"]
    first = next(n for n in seen if n["id"] == ours[0])
    assert first["actor"] == {"id": seeded["actor"]}
    assert first["workOrder"] == {"id": seeded["work_order"]}
    assert first["sourceIp"] == "10.1.2.3" and first["traceId"] == "0" * 32
    assert first["details"] == [{"key": "status", "value": "DISPATCHED"}]


@pytest.mark.parametrize("role", REFUSED)
async def test_everyone_else_is_refused(audit, seeded, role):
    token = audit.token(roles=[role])
    for query in (EVENTS, "{ auditIntegrity { ok } }", "{ securityAlerts { edges { cursor } } }"):
        body = await audit.graphql(query, token, {})
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_no_token_is_unauthenticated(audit, seeded):
    body = await audit.graphql(EVENTS, None)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_filters(audit, seeded):
    token = audit.token()
    body = await audit.graphql(EVENTS, token, {"actorId": seeded["actor"]})
    actors = {e["node"]["actor"]["id"] for e in body["data"]["auditEvents"]["edges"]}
    assert actors == {seeded["actor"]}
    assert len(body["data"]["auditEvents"]["edges"]) == 5  # not org-2's
    body = await audit.graphql(
        EVENTS,
        token,
        {
            "workOrderId": seeded["work_order"],
            "action": "workorder.update",
            "from": "2026-03-01T12:01:00+00:00",
            "to": "2026-03-01T12:02:00+00:00",
        },
    )
    nodes = [e["node"] for e in body["data"]["auditEvents"]["edges"]]
    assert [n["id"] for n in nodes] == [seeded["records"][2].id, seeded["records"][1].id]


async def test_first_is_capped_and_bad_cursors_refused(audit, seeded):
    token = audit.token()
    body = await audit.graphql(EVENTS, token, {"first": 5000})
    assert len(body["data"]["auditEvents"]["edges"]) <= 200
    body = await audit.graphql(EVENTS, token, {"after": "not-a-cursor"})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("role", READERS)
async def test_federated_fields_for_readers(audit, seeded, role):
    reps = [
        {"__typename": "WorkOrder", "id": seeded["work_order"]},
        {"__typename": "User", "id": seeded["actor"]},
    ]
    body = await audit.graphql(ENTITIES, audit.token(roles=[role]), {"reps": reps})
    work_order, user = body["data"]["_entities"]
    assert len(work_order["auditTrail"]) == 4  # org-2's event on the same id is not here
    assert [e["seq"] for e in work_order["auditTrail"]] == sorted(
        e["seq"] for e in work_order["auditTrail"]
    )
    assert len(user["accessHistory"]) == 5


@pytest.mark.parametrize("role", REFUSED)
async def test_federated_fields_refuse_everyone_else(audit, seeded, role):
    reps = [{"__typename": "WorkOrder", "id": seeded["work_order"]}]
    body = await audit.graphql(ENTITIES, audit.token(roles=[role]), {"reps": reps})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert not any(
        item and item.get("auditTrail") for item in (body.get("data") or {}).get("_entities") or []
    )
    reps = [{"__typename": "User", "id": seeded["actor"]}]
    body = await audit.graphql(ENTITIES, audit.token(roles=[role]), {"reps": reps})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_another_orgs_auditor_sees_nothing_of_ours(audit, seeded):
    token = audit.token(org_id="org-3")
    body = await audit.graphql(EVENTS, token)
    assert body["data"]["auditEvents"]["edges"] == []
    reps = [{"__typename": "WorkOrder", "id": seeded["work_order"]}]
    body = await audit.graphql(ENTITIES, token, {"reps": reps})
    assert body["data"]["_entities"][0]["auditTrail"] == []


async def test_append_is_idempotent_by_event_id(audit):
    stub = audit_pb2_grpc.AuditStub(audit.channel.channel)
    records = [record(org_id="org-idem") for _ in range(5)]
    request = audit_pb2.AppendEventsRequest(events=[r.to_proto(PRODUCER) for r in records])
    md = audit.channel.metadata()
    first = await stub.AppendEvents(request, metadata=md)
    assert (first.accepted, first.duplicates) == (5, 0)
    again = await stub.AppendEvents(request, metadata=md)  # a retried batch
    assert (again.accepted, again.duplicates) == (0, 5)
    mixed = audit_pb2.AppendEventsRequest(
        events=[records[0].to_proto(), record(org_id="org-idem").to_proto(), records[0].to_proto()]
    )
    third = await stub.AppendEvents(mixed, metadata=md)
    assert (third.accepted, third.duplicates) == (1, 2)
    conn = await audit.superuser()
    try:
        assert await conn.fetchval("SELECT count(*) FROM audit_events WHERE org_id='org-idem'") == 6
        assert await conn.fetchval("SELECT seq FROM audit_heads WHERE org_id='org-idem'") == 6
    finally:
        await conn.close()


async def test_append_refuses_personal_data_and_callers_without_a_certificate(audit):
    stub = audit_pb2_grpc.AuditStub(audit.channel.channel)
    bad = record().to_proto()
    bad.details["email"] = "jane@example.com"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AppendEvents(
            audit_pb2.AppendEventsRequest(events=[bad]), metadata=audit.channel.metadata()
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jane@example.com" not in (caught.value.details() or "")
    async with grpc.aio.insecure_channel(audit.grpc_target) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await audit_pb2_grpc.AuditStub(plain).AppendEvents(
                audit_pb2.AppendEventsRequest(events=[record().to_proto()]),
                metadata=[(INTERNAL_TOKEN_KEY, "a guess")],
                timeout=2,
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS: no handshake


async def _export(audit, token, **params):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(f"{audit.http_url}/export", params=params, headers=headers)


@pytest.mark.parametrize("role", READERS)
async def test_export_jsonl_verifies_offline(audit, seeded, role):
    await audit.checkpoint()
    response = await _export(audit, audit.token(roles=[role]), format="jsonl")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    dump = parse_jsonl(response.text.splitlines())
    assert {e["org_id"] for e in dump.events} == {"org-1"}
    assert dump.checkpoints and dump.heads
    (report,) = verify_dump(dump, load_public_key(audit.key_file))
    assert report.ok, report.problems
    # The export itself is on the trail.
    body = await audit.graphql(EVENTS, audit.token(), {"action": "audit.export", "first": 1})
    assert body["data"]["auditEvents"]["edges"][0]["node"]["details"] == [
        {"key": "mode", "value": "jsonl"}
    ]


async def test_export_csv_filtered(audit, seeded):
    response = await _export(audit, audit.token(), format="csv", actorId=seeded["actor"])
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 5
    assert {r["actor_id"] for r in rows} == {seeded["actor"]}
    assert json.loads(rows[0]["details"]) == {"status": "DISPATCHED"}


@pytest.mark.parametrize("role", REFUSED)
async def test_export_refuses_everyone_else(audit, seeded, role):
    response = await _export(audit, audit.token(roles=[role]), format="jsonl")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"


async def test_export_needs_a_token_and_a_known_format(audit):
    assert (await _export(audit, None)).status_code == 401
    assert (await _export(audit, audit.token(), format="xml")).status_code == 422


async def test_outcome_enum_and_denied_events(audit):
    denied = record(org_id="org-4", outcome=Outcome.DENIED, action="secret.access.denied")
    await audit.append([denied])
    body = await audit.graphql(EVENTS, audit.token(org_id="org-4"), {"first": 5})
    node = body["data"]["auditEvents"]["edges"][0]["node"]
    assert node["outcome"] == "DENIED"
    assert node["workOrder"] is None and node["secretRefId"] is None


async def test_a_batch_of_trails_is_one_query(audit):
    """A board's 20 work orders come to audit as one `_entities` batch: one SQL query answers
    every trail (it was a session and a query per work order), each trail still its own and
    oldest first, another organisation's events on the same ids still absent."""
    from sqlalchemy import event

    orders = [str(uuid.uuid4()) for _ in range(5)]
    base = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    await audit.append(
        [
            record(work_order_id=w, action=f"step.n{k}", occurred_at=base + timedelta(minutes=k))
            for n, w in enumerate(orders)
            for k in range(n + 1)
        ]
        + [record(org_id="org-2", work_order_id=orders[0], action="their.step")]
    )
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if "audit_events" in statement:
            statements.append(statement)

    engine = audit.runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        reps = [{"__typename": "WorkOrder", "id": w} for w in [*orders, str(uuid.uuid4())]]
        body = await audit.graphql(ENTITIES, audit.token(roles=[Role.ADMIN]), {"reps": reps})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert "errors" not in body, body
    trails = [item["auditTrail"] for item in body["data"]["_entities"]]
    assert [[e["action"] for e in t] for t in trails] == [
        [f"step.n{k}" for k in range(n + 1)] for n in range(5)
    ] + [[]]
    assert len(statements) == 1, statements
