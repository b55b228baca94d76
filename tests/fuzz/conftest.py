"""Property-based fuzzing of the public surface (issue 17): the gateway's public schema, each
subgraph called directly, and the secrets REST door from its own /openapi.json.

The stack is the e2e one (the session fixture `stack` in tests/conftest.py: one `doorward up`
per test run, its rate limits and login throttles raised there so the fuzzer is not stopped
by them; the properties stay as strict). The fuzzer works in organisations of its own
(FuzzCo, OtherCo), so the e2e tests' Acme is never touched. Every answer goes through
`Oracle.check`:

- no 5xx and no INTERNAL_SERVER_ERROR, whatever the input;
- every error carries an allowed code: the contract's eight, plus the GraphQL layer's own
  GRAPHQL_PARSE_FAILED / GRAPHQL_VALIDATION_FAILED (a document or variables that do not fit
  the schema, or exceed the gateway's limits), BAD_REQUEST / PERSISTED_QUERY_NOT_FOUND (an HTTP
  request that is not a GraphQL request), PAYLOAD_TOO_LARGE (413, the edge's body limit) and, on
  REST, GONE (410, a used/expired/revoked token);
- no answer takes longer than DOORWARD_FUZZ_MAX_SECONDS (5 s);
- no canary (a planted door code, contact detail, password or token) in any answer; the one
  reveal the fixtures make is the only answer that ever held the door code.

Budget: DOORWARD_FUZZ_EXAMPLES generated requests per test (default 12: the whole suite stays
within a few minutes on a loaded 2-core machine), seed DOORWARD_FUZZ_SEED (default 17). For a
longer run by hand: DOORWARD_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/fuzz -p no:cacheprovider
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.e2e.conftest import Stack
from tests.e2e.world import PASSWORD, Actor, GraphQLClient, World, bootstrap_org
from tests.fixtures.gateway_signing import signed_as_gateway, stack_gateway_key

EXAMPLES = int(os.environ.get("DOORWARD_FUZZ_EXAMPLES", "12"))
SEED = int(os.environ.get("DOORWARD_FUZZ_SEED", "17"))
MAX_SECONDS = float(os.environ.get("DOORWARD_FUZZ_MAX_SECONDS", "5"))
# Optional: a file that gets one line per fuzzed request (surface, role, status, codes).
LOG_FILE = os.environ.get("DOORWARD_FUZZ_LOG")

CONTRACT_CODES = frozenset(
    {
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "BAD_USER_INPUT",
        "CONFLICT",
        "OUTSIDE_ACCESS_WINDOW",
        "RATE_LIMITED",
        "UNAVAILABLE",
    }
)
GRAPHQL_CODES = frozenset(
    {
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "BAD_REQUEST",
        "PERSISTED_QUERY_NOT_FOUND",
        "PERSISTED_QUERY_NOT_SUPPORTED",
    }
)
ALLOWED_GRAPHQL = CONTRACT_CODES | GRAPHQL_CODES
ALLOWED_REST = CONTRACT_CODES | {"GONE"}
ROLES = ("ADMIN", "DISPATCHER", "TECHNICIAN", "SUBCONTRACTOR", "AUDITOR", "ANONYMOUS")

# Every request the fuzzers made, per surface: printed at the end of the run.
REQUESTS: Counter[str] = Counter()

# Hypothesis: a fixed seed (set with @seed in each test), no example database (every run is the
# same run), no per-example deadline (the oracle has its own), shrinking kept for a readable
# failure.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

FUZZ_DOOR_CODE = f"fuzz-door-{uuid.uuid4().hex}"
FUZZ_PHONE = "+44 7700 8" + str(uuid.uuid4().int)[:5]
FUZZ_EMAIL = f"fuzz-contact-{uuid.uuid4().hex[:10]}@customer-mail.com"
OTHER_PHONE = "+44 7700 7" + str(uuid.uuid4().int)[:5]
OTHER_EMAIL = f"other-contact-{uuid.uuid4().hex[:10]}@customer-mail.com"
OTHER_NAME = f"Other Org Customer {uuid.uuid4().hex[:8]}"

CREATE_CUSTOMER = "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }"
CREATE_SITE = "mutation($i: CreateSiteInput!) { createSite(input: $i) { id } }"
PREPARE_UPLOAD = """mutation($s: ID!, $l: String!) {
  prepareSecretUpload(siteId: $s, kind: DOOR_CODE, label: $l) {
    secretRef { id } uploadUrl uploadToken } }"""
CREATE_JOB = "mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i) { id } }"
ASSIGN = "mutation($id: ID!, $a: ID!) { assignWorkOrder(id: $id, assigneeId: $a) { id } }"
ATTACH = "mutation($w: ID!, $s: ID!) { attachSecret(workOrderId: $w, secretRefId: $s) { id } }"
DISPATCH = "mutation($id: ID!) { dispatchWorkOrder(id: $id) { id status } }"
REQUEST_ACCESS = """mutation($w: ID!, $s: ID!) {
  requestSecretAccess(workOrderId: $w, secretRefId: $s) { id revealUrl revealToken } }"""
REFRESH = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken } }"


@dataclass
class FuzzWorld:
    """Two organisations built through the public API: FuzzCo (one person of every role, a
    customer, a site with a door code, a dispatched job with a grant revealed once) and Other
    (a customer whose contact details nobody in FuzzCo may ever see)."""

    # repr=False: a failing example prints the Oracle, and the stack's env holds credentials.
    stack: Stack = field(repr=False)
    world: World = field(repr=False)
    other: World = field(repr=False)
    actors: dict[str, Actor] = field(repr=False)
    secrets_url: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    # Never in any answer (the fixtures' one reveal aside).
    canaries: list[str] = field(default_factory=list, repr=False)
    # FuzzCo's own contact data: never to an AUDITOR or an anonymous caller.
    contact_canaries: list[str] = field(default_factory=list, repr=False)
    _refreshed: dict[str, float] = field(default_factory=dict, repr=False)

    def token(self, role: str) -> str | None:
        """The role's access token, refreshed (rotating) when it is older than two minutes,
        so a long run never fuzzes with an expired token."""
        if role == "ANONYMOUS":
            return None
        actor = self.actors[role]
        if time.monotonic() - self._refreshed.get(role, 0.0) > 120:
            body = self.world.gql.raw(REFRESH, {"t": actor.refresh_token})
            if not body.get("errors"):
                payload = body["data"]["refresh"]
                actor.token, actor.refresh_token = payload["accessToken"], payload["refreshToken"]
            else:  # the fuzzer ended the session (e.g. a short session policy): log in again
                self.world.login(actor, otp=self._otp(actor))
            self._refreshed[role] = time.monotonic()
            self._note_tokens()
        return actor.token

    def headers(self, role: str) -> dict[str, str]:
        token = self.token(role)
        return {"authorization": f"Bearer {token}"} if token else {}

    @staticmethod
    def _otp(actor: Actor) -> str | None:
        return actor.recovery_codes.pop() if actor.recovery_codes else None

    def _note_tokens(self) -> None:
        for actor in self.actors.values():
            for value in (actor.token, actor.refresh_token):
                if value and value not in self.canaries:
                    self.canaries.append(value)


@dataclass
class Oracle:
    """The properties every fuzzed answer must keep."""

    fw: FuzzWorld = field(repr=False)
    allowed: frozenset[str] = field(default=frozenset(), repr=False)

    def check(
        self, surface: str, role: str, response: httpx.Response, elapsed: float, request: str
    ) -> None:
        REQUESTS[surface] += 1
        where = f"{surface} as {role}: {request[:600]!r}"
        if LOG_FILE:
            with open(LOG_FILE, "a", encoding="utf-8") as log:
                log.write(
                    f"{surface}\t{role}\t{response.status_code}\t{elapsed:.3f}\t"
                    f"{','.join(error_codes(response))}\t{request[:300]!r}\n"
                )
        assert response.status_code < 500, f"{response.status_code} from {where}"
        assert elapsed <= MAX_SECONDS, f"{elapsed:.1f}s from {where}"
        text = response.text
        banned = list(self.fw.canaries)
        if role in ("AUDITOR", "ANONYMOUS"):
            banned += self.fw.contact_canaries
        for canary in banned:
            assert canary not in text, f"a canary in the answer to {where}"
        for code in error_codes(response):
            assert code in self.allowed, f"error code {code!r} from {where}: {text[:800]}"


def error_codes(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("error"), dict):  # REST
        return [str(body["error"].get("code"))]
    codes = []
    for error in body.get("errors") or []:
        codes.append(str((error.get("extensions") or {}).get("code")))
    return codes


def post_graphql(
    client: httpx.Client, url: str, payload: dict[str, Any], headers: dict[str, str]
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post(url, json=payload, headers=headers)
    return response, time.monotonic() - started


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _build(stack: Stack) -> FuzzWorld:
    gql = GraphQLClient(stack.gateway_url)
    org_id, admin = bootstrap_org(stack.env, "FuzzCo", "admin@fuzzco.example", PASSWORD)
    w = World(gql=gql, org_id=org_id, admin=admin, stack=stack)
    w.login(admin)
    w.create_region("North")
    w.create_region("South")
    dispatcher = w.create_person("fuzz_dispatcher", "DISPATCHER", ["North"])
    tech = w.create_person("fuzz_tech", "TECHNICIAN", ["North"])
    sub = w.create_person("fuzz_sub", "SUBCONTRACTOR", ["North"])
    auditor = w.create_person("fuzz_auditor", "AUDITOR", ["North", "South"])
    actors = {
        "ADMIN": admin,
        "DISPATCHER": dispatcher,
        "TECHNICIAN": tech,
        "SUBCONTRACTOR": sub,
        "AUDITOR": auditor,
    }
    other_org, other_admin = bootstrap_org(stack.env, "OtherCo", "admin@otherco.example", PASSWORD)
    other = World(gql=gql, org_id=other_org, admin=other_admin, stack=stack)
    other.login(other_admin)
    other_region = other.create_region("East")
    gql.data(
        CREATE_CUSTOMER,
        {
            "i": {
                "name": OTHER_NAME,
                "phone": OTHER_PHONE,
                "email": OTHER_EMAIL,
                "regionId": other_region,
            }
        },
        other_admin.token,
    )

    north = w.regions["North"]
    d = dispatcher.token
    customer = gql.data(
        CREATE_CUSTOMER,
        {
            "i": {
                "name": "Fuzz Customer",
                "phone": FUZZ_PHONE,
                "email": FUZZ_EMAIL,
                "regionId": north,
            }
        },
        d,
    )["createCustomer"]["id"]
    site = gql.data(
        CREATE_SITE, {"i": {"customerId": customer, "address": "1 Fuzz Road", "regionId": north}}, d
    )["createSite"]["id"]
    upload = gql.data(PREPARE_UPLOAD, {"s": site, "l": "Front door"}, d)["prepareSecretUpload"]
    http = httpx.Client(timeout=30.0)
    put = http.put(
        upload["uploadUrl"],
        json={"uploadToken": upload["uploadToken"], "value": FUZZ_DOOR_CODE},
        headers={"authorization": f"Bearer {d}"},
    )
    assert put.status_code == 201, put.text
    secret = upload["secretRef"]["id"]
    start = datetime.now(UTC) + timedelta(minutes=5)
    job = gql.data(
        CREATE_JOB,
        {
            "i": {
                "siteId": site,
                "title": "Fuzz job",
                "scheduledStart": _iso(start),
                "scheduledEnd": _iso(start + timedelta(hours=8)),
            }
        },
        d,
    )["createWorkOrder"]["id"]
    gql.data(ASSIGN, {"id": job, "a": tech.user_id}, d)
    gql.data(ATTACH, {"w": job, "s": secret}, d)
    gql.data(DISPATCH, {"id": job}, d)
    grant = gql.data(REQUEST_ACCESS, {"w": job, "s": secret}, tech.token)["requestSecretAccess"]
    # The one reveal: the only answer that may ever hold the door code.
    revealed = http.post(
        grant["revealUrl"],
        json={"revealToken": grant["revealToken"]},
        headers={"authorization": f"Bearer {tech.token}"},
    )
    assert revealed.status_code == 200 and revealed.json()["value"] == FUZZ_DOOR_CODE
    # A second grant, not revealed: its token is a canary too.
    spare = gql.data(REQUEST_ACCESS, {"w": job, "s": secret}, tech.token)["requestSecretAccess"]
    http.close()

    actors["OTHER_ADMIN"] = other_admin  # for the after-fuzz checks, never fuzzed with
    fw = FuzzWorld(
        stack=stack,
        world=w,
        other=other,
        actors=actors,
        secrets_url=stack.http_url("secrets"),
        ids={
            "customer": customer,
            "site": site,
            "secret": secret,
            "job": job,
            "grant": grant["id"],
            "spare_grant": spare["id"],
            "region": north,
        },
        canaries=[
            FUZZ_DOOR_CODE,
            PASSWORD,
            OTHER_PHONE,
            OTHER_EMAIL,
            OTHER_NAME,
            upload["uploadToken"],
            grant["revealToken"],
            spare["revealToken"],
        ],
        contact_canaries=[FUZZ_PHONE, FUZZ_EMAIL],
    )
    fw.canaries += [a.password for a in actors.values() if a.password not in fw.canaries]
    fw._note_tokens()
    now = time.monotonic()
    fw._refreshed = dict.fromkeys(actors, now)
    return fw


@pytest.fixture(scope="session")
def fuzz_world(stack: Stack) -> FuzzWorld:
    return _build(stack)


@pytest.fixture(scope="session")
def http_client(stack: Stack) -> Iterator[httpx.Client]:
    # Signed as the gateway signs (each request afresh): subgraphs answer nobody else, and the
    # fuzzing is about what they do with the documents. The gateway ignores the extra headers.
    auth = signed_as_gateway(key_file=stack_gateway_key(stack.data_dir))
    with httpx.Client(timeout=MAX_SECONDS * 4, auth=auth) as client:
        yield client


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REQUESTS:
        terminalreporter.section("fuzz: generated requests per surface")
        for surface, count in sorted(REQUESTS.items()):
            terminalreporter.write_line(f"{surface:<28} {count}")
        terminalreporter.write_line(f"{'total':<28} {sum(REQUESTS.values())}")
