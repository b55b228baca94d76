"""Issue 13, end to end: security ops follow an access through the trace store, in the graph.

`doorward up` runs the embedded trace store and every process exports to it. A technician asks
for a door code through the gateway and reveals it at the secrets door; the auditor finds the
audit events, resolves their `trace` through the graph and sees the gateway, workorders,
secrets, audit and the Vault calls in it; a denial shows in `traces(filter: {decision: DENY})`
within 5 s. Another organisation's auditor gets nothing of it; a technician gets nothing at all.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.e2e.test_secret_access import REQUEST, Scenario, iso, now
from tests.e2e.world import PASSWORD, World, bootstrap_org

pytestmark = pytest.mark.e2e

EVENT_TRACES = """
query($s: ID, $a: String, $from: DateTime) {
  auditEvents(secretRefId: $s, action: $a, from: $from, first: 20) {
    edges { node { id action outcome traceId
      trace { traceId durationMs services auditEvents { id action }
        spans { spanId parentSpanId service name kind status attributes { key value } } } } }
  }
}
"""
TRACE = """query($id: ID!) { trace(traceId: $id) { traceId services } }"""
TRACES = """
query($filter: TraceFilter) { traces(filter: $filter, first: 50) { edges { node { traceId } } } }
"""

EVERY_SERVICE = {"doorward-gateway", "doorward-workorders", "doorward-secrets", "doorward-audit"}
# The reveal itself is a REST call at the secrets door (not through the gateway).
REVEAL_SERVICES = {"doorward-secrets", "doorward-workorders", "doorward-audit"}


def eventually(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `probe` until it returns something truthy (spans are exported in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.25)


# What the exporters and the store log when spans do not arrive (the OTLP exporter's own
# warnings, a batch dropped from a full queue, the receiver refusing to store).
EXPORT_TROUBLE = ("Failed to export", "Transient error", "Queue full", "OTLP export not stored")


def export_trouble(world: World) -> list[str]:
    """The stack log's lines about spans that may not have reached the store (for a failure
    message: which process, and why)."""
    lines = world.stack.logs().splitlines()
    return [line[:300] for line in lines if any(t in line for t in EXPORT_TROUBLE)][-10:]


def answer_or_none(world: World, query: str, variables: dict, token: str) -> dict | None:
    """The data of a query polled until a condition holds. A subgraph that did not answer
    in time (UNAVAILABLE: audit resolving traces on a loaded machine) is "not yet", not a
    failure: the poll's deadline decides. Any other error fails at once."""
    body = world.gql.raw(query, variables, token)
    errors = body.get("errors") or []
    codes = {e.get("extensions", {}).get("code") for e in errors}
    if codes == {"UNAVAILABLE"}:
        return None
    assert not errors, errors
    return body["data"]  # type: ignore[no-any-return]


def attributes(span: dict) -> dict[str, str]:
    return {a["key"]: a["value"] for a in span["attributes"]}


def vault_calls(trace: dict, vault_addr: str) -> list[dict]:
    """Client spans of the secrets service's HTTP calls to OpenBao."""
    host = vault_addr.split("://", 1)[-1].rstrip("/")
    return [
        s
        for s in trace["spans"]
        if host in attributes(s).get("http.url", attributes(s).get("url.full", ""))
    ]


class Reveal:
    """One grant through the gateway and one reveal at the secrets door, by Tom."""

    def __init__(self, scenario: Scenario, world: World) -> None:
        self.started = now() - timedelta(seconds=1)
        site, self.secret = scenario.site_with_secret()
        tom = world.people["tom"]
        job = scenario.job(site, self.secret, tom.user_id, start=now() - timedelta(minutes=5))
        grant = scenario.gql.data(REQUEST, {"w": job, "s": self.secret}, tom.token)
        answer = scenario.reveal(grant["requestSecretAccess"], tom.token)
        assert answer.status_code == 200, answer.text
        self.job = job

    def event(self, world: World, action: str, services: set[str]) -> dict:
        """The audit event of `action`, once its trace (resolved through the graph) holds the
        spans of `services`: processes export in batches, the outbox delivers after commit."""
        auditor = world.people["auditor"]
        variables = {"s": self.secret, "a": action, "from": iso(self.started)}
        last: list[Any] = []

        def probe() -> dict | None:
            data = answer_or_none(world, EVENT_TRACES, variables, auditor.token)
            if data is None:
                last[:] = ["(audit did not answer in time)"]
                return None
            edges = data["auditEvents"]["edges"]
            node = edges[0]["node"] if edges else None
            last[:] = [node and node["trace"] and node["trace"]["services"]]
            if node and node["trace"] and services <= set(node["trace"]["services"]):
                return node  # type: ignore[no-any-return]
            return None

        try:
            node: dict = eventually(probe, 30, f"the {action} event's trace through the graph")
        except AssertionError as error:
            trouble = export_trouble(world) or ["nothing about exports in the stack log"]
            raise AssertionError(f"{error}; the trace had {last}; " + "\n".join(trouble)) from None
        return node


@pytest.fixture(scope="module")
def scenario(world: World) -> Scenario:
    return Scenario(world)


@pytest.fixture(scope="module")
def reveal(scenario: Scenario, world: World) -> Reveal:
    return Reveal(scenario, world)


@pytest.fixture(scope="module")
def other_auditor(world: World) -> str:
    """The auditor of a second organisation on the same stack (their access token)."""
    org_id, admin = bootstrap_org(
        world.stack.env, "Initech", f"admin-{uuid.uuid4().hex[:6]}@initech.example", PASSWORD
    )
    initech = World(gql=world.gql, org_id=org_id, admin=admin, stack=world.stack)
    initech.login(admin)
    initech.create_region("Springfield")
    return initech.create_person("auditor", "AUDITOR", ["Springfield"]).token


def test_the_grant_through_the_gateway_is_one_trace_of_every_service_and_vault(
    reveal: Reveal, world: World
) -> None:
    def connected() -> dict | None:
        # One trace: every span but the gateway's root hangs under another span of the same
        # trace. Five processes export in batches, so a parent may arrive after its child.
        grant = reveal.event(world, "secret.access.grant", EVERY_SERVICE)
        ids = {s["spanId"] for s in grant["trace"]["spans"]}
        roots = [s for s in grant["trace"]["spans"] if s["parentSpanId"] not in ids]
        return grant if [r["service"] for r in roots] == ["doorward-gateway"] else None

    try:
        grant = eventually(connected, 15, "the grant's spans all under the gateway's root")
    except AssertionError as error:
        raise AssertionError(f"{error}; " + "\n".join(export_trouble(world))) from None
    trace = grant["trace"]
    assert trace["traceId"] == grant["traceId"]
    assert vault_calls(trace, world.stack.env["DOORWARD_VAULT_ADDR"]), "no Vault call in the trace"
    # and back from the trace to the audit trail
    assert grant["id"] in [e["id"] for e in trace["auditEvents"]]


def test_the_reveal_at_the_secrets_door_is_one_trace_with_the_unwrap(
    reveal: Reveal, world: World
) -> None:
    event = reveal.event(world, "secret.reveal", REVEAL_SERVICES)
    trace = event["trace"]
    unwraps = [
        s
        for s in vault_calls(trace, world.stack.env["DOORWARD_VAULT_ADDR"])
        if "/v1/sys/wrapping/unwrap" in attributes(s).get("http.url", "")
    ]
    assert unwraps, "no unwrap in the reveal's trace"
    assert event["id"] in [e["id"] for e in trace["auditEvents"]]


def test_the_decision_spans_name_their_audit_events(reveal: Reveal, world: World) -> None:
    for action, span_name in (
        ("secret.reveal", "doorward.secret.reveal"),
        ("secret.access.grant", "doorward.grant.issue"),
    ):
        event = reveal.event(world, action, REVEAL_SERVICES)
        decisions = [s for s in event["trace"]["spans"] if s["name"] == span_name]
        assert decisions, f"no {span_name} span in {action}'s trace"
        values = attributes(decisions[0])
        assert values["doorward.decision"] == "allow"
        assert values["doorward.audit.event_id"] == event["id"]
        assert decisions[0]["status"] != "ERROR"


def test_a_denial_is_listed_under_deny_within_five_seconds(
    scenario: Scenario, reveal: Reveal, world: World
) -> None:
    tina, auditor = world.people["tina"], world.people["auditor"]
    started = now() - timedelta(seconds=1)
    refused = scenario.gql.raw(REQUEST, {"w": reveal.job, "s": reveal.secret}, tina.token)
    denied_at = time.monotonic()
    # Tina is not the assignee: refused (a job she may not see answers as not found).
    assert refused["errors"][0]["extensions"]["code"] in {"FORBIDDEN", "NOT_FOUND"}
    flt = {"decision": "DENY", "from": iso(started)}

    def listed() -> list[str]:
        data = answer_or_none(world, TRACES, {"filter": flt}, auditor.token)
        return [e["node"]["traceId"] for e in data["traces"]["edges"]] if data else []

    found = eventually(listed, 5, "the denial under traces(filter: {decision: DENY})")
    assert time.monotonic() - denied_at <= 5.5
    denial = world.gql.data(
        EVENT_TRACES,
        {"s": reveal.secret, "a": "secret.access.denied", "from": iso(started)},
        auditor.token,
    )["auditEvents"]["edges"]
    if denial:  # an audited denial leads to the same trace
        assert denial[0]["node"]["traceId"] in found
    trace = world.gql.data(
        "query($id: ID!) { trace(traceId: $id) { spans { status attributes { key value } } } }",
        {"id": found[0]},
        auditor.token,
    )["trace"]
    decide = [s for s in trace["spans"] if attributes(s).get("doorward.decision") == "deny"]
    assert decide and all(s["status"] != "ERROR" for s in decide)  # a denial is not an error


def test_another_organisations_auditor_gets_nothing_and_a_technician_nothing_at_all(
    reveal: Reveal, world: World, other_auditor: str
) -> None:
    grant = reveal.event(world, "secret.access.grant", EVERY_SERVICE)
    trace_id = grant["traceId"]
    assert world.gql.data(TRACE, {"id": trace_id}, other_auditor)["trace"] is None
    listed = world.gql.data(TRACES, {"filter": {}}, other_auditor)["traces"]["edges"]
    assert trace_id not in [e["node"]["traceId"] for e in listed]
    own = world.gql.data(TRACES, {"filter": {"service": "secrets"}}, world.people["auditor"].token)
    assert trace_id in [e["node"]["traceId"] for e in own["traces"]["edges"]]
    for who in ("tom", "dispatcher"):
        token = world.people[who].token
        assert world.gql.error_codes(TRACE, {"id": trace_id}, token) == ["FORBIDDEN"]
        assert world.gql.error_codes(TRACES, {"filter": {}}, token) == ["FORBIDDEN"]


def test_the_trace_store_keeps_no_secret(reveal: Reveal, world: World) -> None:
    """After these reveals too (the canary test of test_secret_access ran before them): the
    trace store's database holds the traces, and no door code or contact detail."""
    from tests.e2e.test_secret_access import (
        CUSTOMER_EMAIL,
        CUSTOMER_NAME,
        CUSTOMER_PHONE,
        DOOR_CODE,
        _pg_dump,
    )

    reveal.event(world, "secret.reveal", REVEAL_SERVICES)  # its spans are in
    dump = _pg_dump(world.stack, "doorward_traces")
    assert "doorward-secrets" in dump
    for canary in (DOOR_CODE, CUSTOMER_EMAIL, CUSTOMER_PHONE, CUSTOMER_NAME, PASSWORD):
        assert canary not in dump
    for actor in world.people.values():
        assert actor.token not in dump and actor.email not in dump
