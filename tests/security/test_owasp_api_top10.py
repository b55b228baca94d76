"""The OWASP API Security Top 10 (2023), item by item, against the real stack over HTTP.

This file is the index: every item that applies to Doorward has at least one real check here,
each from both sides (the attack fails, the honest use still works). Deeper suites are named
where they exist rather than repeated:

  API1  Broken Object Level Authorization ........ tests/e2e/test_access_matrix.py (every
        operation x role x organisation), tests/integration/*/test_visibility.py
  API2  Broken Authentication .................... tests/integration/identity/, the gateway's
        token checks in tests/integration/gateway/test_gateway.py
  API3  Broken Object Property Level Authorization  contact fields per role in the access matrix
  API4  Unrestricted Resource Consumption ........ tests/unit/gateway/test_limits.py,
        tests/security/test_edge_*.py (the edge's one-pass limits and streamed bodies)
  API5  Broken Function Level Authorization ...... the access matrix's administration rows,
        tests/security/test_acting_for_user.py (secrets takes the principal from the user's
        token, never from request fields)
  API6  Unrestricted Access to Sensitive Business Flows  tests/e2e/test_secret_access.py (the
        door-code grant and reveal rules in full), tests/security/test_break_glass.py
        (step-up and a second approver), tests/security/test_grant_limits.py (per-user limits)
  API7  Server Side Request Forgery .............. here only: no API takes a URL to fetch
  API8  Security Misconfiguration ................ tests/integration/gateway/test_gateway.py
  API9  Improper Inventory Management ............ tests/integration/gateway/test_gateway.py
        (federation internals), here for the production stack
  API10 Unsafe Consumption of APIs ............... tests/unit/gateway/test_executor.py (value
        completion), here with a subgraph that lies

One stack for the module, in production mode (DOORWARD_ENV=production, as deployed): its own
PostgreSQL and OpenBao, so it never collides with the e2e session's stack, built with the e2e
helpers (tests/e2e/conftest.py, world.py). Every process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from deploy.embedded import EmbeddedOpenBao, EmbeddedPostgres, free_port_pair, provision_vault
from tests.e2e.conftest import (
    SERVICES,
    START_TIMEOUT,
    Stack,
    stack_env,
    start_up,
    stop_up,
    wait_for_gateway,
)
from tests.e2e.test_secret_access import (
    CUSTOMER_EMAIL,
    CUSTOMER_NAME,
    CUSTOMER_PHONE,
    REQUEST,
    Scenario,
)
from tests.e2e.world import LOGIN, PASSWORD, Actor, GraphQLClient, World, bootstrap_org

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:8]
PHONE = "+44 7700 9" + str(uuid.uuid4().int)[:5]
EMAIL = f"owasp-{RUN}@customer-mail.com"
NAME = f"Owasp Customer {RUN}"
ADDRESS = f"{RUN[:3]} Owasp Street, London"
# The gateway's per-caller budget in this stack: small enough to reach in a test, large enough
# for the module's own setup (which never sends more than a few dozen requests per caller).
RATE_PER_SECOND, RATE_BURST = 20, 60
READY_TIMEOUT = 3 * START_TIMEOUT

WORK_ORDER = "query($id: ID!) { workOrder(id: $id) { id title } }"
ME = "{ me { id email } }"
CUSTOMER = "query($id: ID!) { customer(id: $id) { id name phone email } }"
CREATE_CUSTOMER = "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }"
CREATE_SITE = "mutation($i: CreateSiteInput!) { createSite(input: $i) { id } }"
CREATE_REGION = "mutation($n: String!) { createRegion(name: $n) { id } }"
CREATE_USER = "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }"
PREPARE_UPLOAD = """mutation($s: ID!) { prepareSecretUpload(siteId: $s, kind: DOOR_CODE,
  label: "Front door") { secretRef { id } uploadUrl uploadToken } }"""
REFRESH = "mutation($r: String!) { refresh(refreshToken: $r) { accessToken refreshToken } }"


# ---- the module's stack ------------------------------------------------------------------------


@dataclass
class Top10:
    stack: Stack
    acme: World
    globex: World
    ids: dict[str, str]
    scenario: Scenario

    @property
    def gql(self) -> GraphQLClient:
        return self.acme.gql

    def person(self, key: str) -> Actor:
        return self.acme.people[key]

    def post(self, body: Any, token: str | None = None, **headers: str) -> httpx.Response:
        if token:
            headers["authorization"] = f"Bearer {token}"
        return self.gql.http.post(self.stack.gateway_url, json=body, headers=headers)


@pytest.fixture(scope="module")
def top10_stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="doorward-owasp-"))
    postgres = EmbeddedPostgres(root / "pgdata")
    bao = EmbeddedOpenBao(root / "bao", free_port_pair(), dev=True)
    proc = None
    try:
        postgres.start()
        bao.start()
        provision_vault(bao.client())
        data_dir, log_file, span_file = root / "data", root / "stack.log", root / "spans.jsonl"
        env = stack_env(data_dir, span_file, postgres.admin_url(), bao.addr, bao.root_token)
        env["DOORWARD_ENV"] = "production"
        # The machine is shared: give a slow start room rather than fail the whole module.
        env["DOORWARD_READY_TIMEOUT"] = str(READY_TIMEOUT)
        env["DOORWARD_GATEWAY_RATE_LIMIT_PER_SECOND"] = str(RATE_PER_SECOND)
        env["DOORWARD_GATEWAY_RATE_LIMIT_BURST"] = str(RATE_BURST)
        proc = start_up(env, log_file)
        wait_for_gateway(proc, f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql",
                         log_file, READY_TIMEOUT)  # fmt: skip
        yield Stack(
            env=env,
            data_dir=data_dir,
            log_file=log_file,
            span_file=span_file,
            pid=proc.pid,
            db_names={svc: f"doorward_{svc}" for svc in SERVICES},
            admin_db_url=postgres.admin_url(),
        )
    finally:
        if proc is not None:
            stop_up(proc)
        bao.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def t(top10_stack: Stack) -> Top10:
    gql = GraphQLClient(top10_stack.gateway_url)
    org_id, admin = bootstrap_org(top10_stack.env, "Acme", f"admin-{RUN}@acme.com", PASSWORD)
    acme = World(gql=gql, org_id=org_id, admin=admin, stack=top10_stack)
    acme.login(admin)
    acme.create_region("London")
    for key, role in (
        ("dispatcher", "DISPATCHER"),
        ("tom", "TECHNICIAN"),
        ("tina", "TECHNICIAN"),
        ("sub", "SUBCONTRACTOR"),
        ("auditor", "AUDITOR"),
        ("leaver", "TECHNICIAN"),
        ("rotator", "TECHNICIAN"),
        ("burst", "TECHNICIAN"),
    ):
        acme.create_person(key, role, ["London"])
    scenario = Scenario(acme)
    site, secret = scenario.site_with_secret()
    ids = {"site": site, "secret": secret}
    d = acme.people["dispatcher"].token
    ids["customer"] = gql.data(
        CREATE_CUSTOMER,
        {"i": {"name": NAME, "phone": PHONE, "email": EMAIL, "regionId": acme.regions["London"]}},
        d,
    )["createCustomer"]["id"]
    ids["contact_site"] = gql.data(
        CREATE_SITE,
        {"i": {"customerId": ids["customer"], "address": ADDRESS,
               "regionId": acme.regions["London"]}},
        d,
    )["createSite"]["id"]  # fmt: skip
    start = datetime.now(UTC) - timedelta(minutes=5)
    ids["job_tom"] = scenario.job(site, secret, acme.people["tom"].user_id, start=start)
    globex_id, globex_admin = bootstrap_org(
        top10_stack.env, "Globex", f"admin-{RUN}@globex.com", PASSWORD
    )
    globex = World(gql=gql, org_id=globex_id, admin=globex_admin, stack=top10_stack)
    globex.login(globex_admin)
    globex.create_region("Paris")
    return Top10(stack=top10_stack, acme=acme, globex=globex, ids=ids, scenario=scenario)


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code", "") for e in body.get("errors") or []]


# ---- API1:2023 Broken Object Level Authorization ------------------------------------------------


def test_api1_an_object_id_of_another_organisation_or_user_reveals_nothing(t: Top10) -> None:
    job = t.ids["job_tom"]
    # Attack: Globex's admin, and a colleague who is not the assignee, name Tom's job by id.
    for actor in (t.globex.admin, t.person("tina")):
        body = t.gql.raw(WORK_ORDER, {"id": job}, actor.token)
        assert codes(body) == ["NOT_FOUND"] and body["data"]["workOrder"] is None
    body = t.gql.raw(CUSTOMER, {"id": t.ids["customer"]}, t.globex.admin.token)
    assert codes(body) == ["NOT_FOUND"] and NAME not in json.dumps(body)
    # Honest: the assignee and the region's dispatcher read it.
    for actor in (t.person("tom"), t.person("dispatcher")):
        assert t.gql.data(WORK_ORDER, {"id": job}, actor.token)["workOrder"]["id"] == job


# ---- API2:2023 Broken Authentication ------------------------------------------------------------


def _forge(token: str, *, alg_none: bool = False) -> str:
    head, payload, signature = token.split(".")
    if alg_none:
        none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        return f"{none}.{payload}."
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["ADMIN"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


def test_api2_missing_forged_or_unsigned_tokens_are_refused(t: Top10) -> None:
    tom = t.person("tom")
    assert t.gql.error_codes(ME) == ["UNAUTHENTICATED"]
    for bad in (_forge(tom.token), _forge(tom.token, alg_none=True), tom.token[:-4] + "AAAA"):
        response = t.post({"query": ME}, bad)
        assert response.status_code == 401
        assert codes(response.json()) == ["UNAUTHENTICATED"]
    assert t.gql.data(ME, token=tom.token)["me"]["id"] == tom.user_id


def test_api2_login_does_not_say_which_of_email_or_password_was_wrong(t: Top10) -> None:
    tom = t.person("tom")
    wrong_password = t.gql.raw(LOGIN, {"email": tom.email, "password": "not the password 0"})
    unknown_email = t.gql.raw(LOGIN, {"email": f"nobody-{RUN}@acme.com", "password": PASSWORD})
    assert codes(wrong_password) == codes(unknown_email) == ["UNAUTHENTICATED"]
    assert wrong_password["errors"][0]["message"] == unknown_email["errors"][0]["message"]
    assert "accessToken" not in json.dumps(wrong_password["data"] or {})
    assert (
        t.gql.data(LOGIN, {"email": tom.email, "password": tom.password})["login"]["user"]["id"]
        == tom.user_id
    )


def test_api2_a_replayed_refresh_token_ends_the_session_and_logout_ends_the_token(
    t: Top10,
) -> None:
    rotator = t.person("rotator")
    first = rotator.refresh_token
    fresh = t.gql.data(REFRESH, {"r": first})["refresh"]  # honest rotation
    assert t.gql.data(ME, token=fresh["accessToken"])["me"]["id"] == rotator.user_id
    # A stolen, already used refresh token: refused, and the whole family ends with it.
    assert t.gql.error_codes(REFRESH, {"r": first}) == ["UNAUTHENTICATED"]
    assert t.gql.error_codes(REFRESH, {"r": fresh["refreshToken"]}) == ["UNAUTHENTICATED"]
    # Logout: the access token is refused from then on; a new login works.
    t.acme.login(rotator)
    assert t.gql.data("mutation { logout }", token=rotator.token)["logout"] is True
    assert t.gql.error_codes(ME, token=rotator.token) == ["UNAUTHENTICATED"]
    t.acme.login(rotator)
    assert t.gql.data(ME, token=rotator.token)["me"]["id"] == rotator.user_id


# ---- API3:2023 Broken Object Property Level Authorization ---------------------------------------


def test_api3_properties_are_authorized_one_by_one(t: Top10) -> None:
    # Exposure: the subcontractor's job needs the name only; phone and email stay null.
    sub = t.person("sub")
    job = t.scenario.job(
        t.ids["site"],
        t.ids["secret"],
        sub.user_id,
        start=datetime.now(UTC) - timedelta(minutes=5),
    )
    query = "query($id: ID!) { workOrder(id: $id) { site { customer { name phone email } } } }"
    seen = t.gql.data(query, {"id": job}, sub.token)["workOrder"]["site"]["customer"]
    assert seen == {"name": CUSTOMER_NAME, "phone": None, "email": None}
    full = t.gql.data(query, {"id": job}, t.person("dispatcher").token)
    assert full["workOrder"]["site"]["customer"] == {
        "name": CUSTOMER_NAME,
        "phone": CUSTOMER_PHONE,
        "email": CUSTOMER_EMAIL,
    }
    # Mass assignment: an update cannot carry the status, the assignee or the region.
    tom, d = t.person("tom"), t.person("dispatcher").token
    for extra in ("status: COMPLETED", 'assigneeId: "x"', 'regionId: "x"'):
        body = t.gql.raw(
            f'mutation($id: ID!) {{ updateWorkOrder(id: $id, input: {{title: "t", {extra}}}) '
            "{ id status } }",
            {"id": t.ids["job_tom"]},
            d,
        )
        assert body.get("errors") and not body.get("data"), extra
    # A technician cannot give themselves a role; the admin can change a display name.
    body = t.gql.raw(
        "mutation($id: ID!) { updateUser(id: $id, input: {roles: [ADMIN]}) { id roles } }",
        {"id": tom.user_id},
        tom.token,
    )
    assert codes(body) == ["FORBIDDEN"]
    renamed = t.gql.data(
        'mutation($id: ID!) { updateUser(id: $id, input: {displayName: "Tom T."}) '
        "{ id displayName } }",
        {"id": tom.user_id},
        t.acme.admin.token,
    )
    assert renamed["updateUser"]["displayName"] == "Tom T."
    # No type in the graph has a secret's value.
    body = t.gql.raw(
        "query($id: ID!) { workOrder(id: $id) { secretRefs { id value } } }",
        {"id": t.ids["job_tom"]},
        tom.token,
    )
    assert body.get("errors") and not body.get("data")
    refs = t.gql.data(
        "query($id: ID!) { workOrder(id: $id) { secretRefs { id label } } }",
        {"id": t.ids["job_tom"]},
        tom.token,
    )
    assert refs["workOrder"]["secretRefs"] == [{"id": t.ids["secret"], "label": "Front door"}]


# ---- API4:2023 Unrestricted Resource Consumption ------------------------------------------------


def test_api4_depth_breadth_batch_body_and_rate_are_bounded(t: Top10) -> None:
    token = t.person("dispatcher").token
    deep = "{ me { " + "regions { id " * 20 + "}" * 20 + " } }"
    assert t.post({"query": deep}, token).status_code == 400
    aliases = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(40)) + " }"
    assert t.post({"query": aliases}, token).status_code == 400
    batch = [{"query": "{ me { id } }"}] * 11
    assert t.post(batch, token).status_code == 400
    huge = t.gql.http.post(
        t.stack.gateway_url,
        content=b'{"query": "{ me { id } }", "pad": "' + b"x" * 1_100_000 + b'"}',
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert huge.status_code == 413
    # `first` is capped at 200 (the contract): asking for a million is not a million.
    listed = t.gql.raw("{ workOrders(first: 1000000) { edges { node { id } } } }", token=token)
    assert codes(listed) in ([], ["BAD_USER_INPUT"])
    # Honest: a normal request and a small batch go through.
    assert t.post({"query": "{ me { id } }"}, token).status_code == 200
    assert t.post([{"query": "{ me { id } }"}] * 3, token).status_code == 200


def test_api4_one_caller_is_rate_limited_without_starving_others(t: Top10) -> None:
    burst = t.person("burst")

    async def hammer() -> list[int]:
        """Waves of concurrent requests until the budget runs out (or 20 waves: a gateway
        that slow would never reach the limit, and the assert below says so)."""
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=30) as client:

            async def one() -> int:
                response = await client.post(
                    t.stack.gateway_url,
                    json={"query": "{ __typename }"},
                    headers={"authorization": f"Bearer {burst.token}"},
                )
                return response.status_code

            for _ in range(20):
                statuses += await asyncio.gather(*(one() for _ in range(RATE_BURST)))
                if 429 in statuses:
                    break
        return statuses

    statuses = asyncio.run(hammer())
    assert 429 in statuses and 200 in statuses
    # Another user is not affected by that caller's budget.
    assert t.gql.data(ME, token=t.person("tina").token)["me"]["id"]


# ---- API5:2023 Broken Function Level Authorization ----------------------------------------------


def test_api5_administrative_functions_need_the_role(t: Top10) -> None:
    new_user = {
        "email": f"sneaky-{RUN}@acme.com",
        "displayName": "Sneaky",
        "roles": ["ADMIN"],
        "regionIds": [t.acme.regions["London"]],
        "initialPassword": PASSWORD,
    }
    for key in ("tom", "dispatcher", "auditor"):
        token = t.person(key).token
        assert t.gql.error_codes(CREATE_REGION, {"n": f"Nowhere {RUN}"}, token) == ["FORBIDDEN"]
        assert t.gql.error_codes(CREATE_USER, {"i": new_user}, token) == ["FORBIDDEN"]
    erase = 'mutation($c: ID!) { eraseCustomer(customerId: $c, reason: "asked") { id } }'
    assert t.gql.error_codes(erase, {"c": t.ids["customer"]}, t.person("auditor").token) in (
        ["FORBIDDEN"],
        ["NOT_FOUND"],
    )
    # Honest: the admin may.
    assert t.gql.data(CREATE_REGION, {"n": f"Leeds {RUN}"}, t.acme.admin.token)["createRegion"]


def test_api5_internal_grpc_refuses_a_caller_without_credentials(t: Top10) -> None:
    from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc

    async def call() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(t.stack.grpc_target("secrets")) as channel:
            stub = secrets_pb2_grpc.SecretsStub(channel)
            try:
                await stub.GetSecretRefs(
                    secrets_pb2.GetSecretRefsRequest(org_id=t.acme.org_id), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    # Unauthenticated (a shared-token server), or no TLS handshake at all (mutual TLS).
    assert asyncio.run(call()) in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAVAILABLE,
    )
    # Honest: the services themselves use it (a secret ref lists through workorders).
    refs = t.gql.data(
        "query($id: ID!) { workOrder(id: $id) { secretRefs { id } } }",
        {"id": t.ids["job_tom"]},
        t.person("tom").token,
    )
    assert refs["workOrder"]["secretRefs"] == [{"id": t.ids["secret"]}]


# ---- API6:2023 Unrestricted Access to Sensitive Business Flows ----------------------------------


def test_api6_a_door_code_goes_only_to_the_assignee_and_only_once(t: Top10) -> None:
    tom, tina = t.person("tom"), t.person("tina")
    variables = {"w": t.ids["job_tom"], "s": t.ids["secret"]}
    assert t.gql.error_codes(REQUEST, variables, tina.token) in (["FORBIDDEN"], ["NOT_FOUND"])
    grant = t.gql.data(REQUEST, variables, tom.token)["requestSecretAccess"]
    # Someone else holding the reveal token gets nothing.
    stolen = t.scenario.reveal(grant, tina.token)
    assert stolen.status_code in (403, 404, 410) and "value" not in stolen.text
    first = t.scenario.reveal(grant, tom.token)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    assert first.json()["value"].startswith("canary-door-")
    replay = t.scenario.reveal(grant, tom.token)
    assert replay.status_code == 410 and "canary-door-" not in replay.text


# ---- API7:2023 Server Side Request Forgery -----------------------------------------------------


def test_api7_urls_come_from_configuration_never_from_the_request(t: Top10) -> None:
    """No operation takes a URL to fetch; the URLs Doorward hands out (upload, reveal) are
    built from configuration, so a spoofed Host or X-Forwarded-Host cannot aim them (and the
    client behind them) at another server."""
    expected = t.stack.http_url("secrets")
    spoofed = t.post(
        {"query": PREPARE_UPLOAD, "variables": {"s": t.ids["site"]}},
        t.person("dispatcher").token,
        **{"x-forwarded-host": "attacker.example", "x-forwarded-proto": "https",
           "forwarded": "host=attacker.example"},
    )  # fmt: skip
    url = spoofed.json()["data"]["prepareSecretUpload"]["uploadUrl"]
    assert url.startswith(expected + "/") and "attacker" not in url
    honest = t.gql.data(PREPARE_UPLOAD, {"s": t.ids["site"]}, t.person("dispatcher").token)
    assert honest["prepareSecretUpload"]["uploadUrl"].startswith(expected + "/")


# ---- API8:2023 Security Misconfiguration -------------------------------------------------------


def test_api8_production_hides_introspection_and_graphiql(t: Top10) -> None:
    token = t.person("dispatcher").token
    body = t.post({"query": "{ __schema { types { name } } }"}, token).json()
    assert body.get("errors") and "types" not in json.dumps(body.get("data") or {})
    html = t.gql.http.get(t.stack.gateway_url, headers={"accept": "text/html"})
    assert "graphiql" not in html.text.lower()
    for svc in ("identity", "workorders", "audit"):
        page = t.gql.http.get(f"{t.stack.http_url(svc)}/graphql", headers={"accept": "text/html"})
        assert "graphiql" not in page.text.lower(), svc
    # Honest: `__typename` (what clients use to tell types apart) still answers.
    assert t.post({"query": "{ __typename }"}, token).json()["data"] == {"__typename": "Query"}


def test_api8_no_cors_unless_configured(t: Top10) -> None:
    preflight = t.gql.http.options(
        t.stack.gateway_url,
        headers={
            "origin": "https://attacker.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = t.post({"query": "{ __typename }"}, None, origin="https://attacker.example")
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-credentials" not in simple.headers
    # Honest: a same-origin client (no Origin header needed) is served.
    assert t.post({"query": "{ __typename }"}, t.person("tom").token).status_code == 200


def test_api8_security_headers_on_every_answer(t: Top10) -> None:
    token = t.person("tom").token
    answers = {
        "gateway ok": t.post({"query": ME}, token),
        "gateway refused": t.post({"query": ME}),
        "gateway bad request": t.post({"query": "{"}, token),
        "secrets REST refused": t.gql.http.post(
            f"{t.stack.http_url('secrets')}/v1/reveals/nothing", json={"revealToken": "x"}
        ),
    }
    for name, response in answers.items():
        headers = response.headers
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("x-frame-options") == "DENY", name
        assert headers.get("referrer-policy") == "no-referrer", name
        assert headers.get("cache-control") == "no-store", name
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), name
    # Honest: the answers are still what they were (JSON, the data).
    assert answers["gateway ok"].json()["data"]["me"]["id"] == t.person("tom").user_id


def test_api8_errors_are_masked(t: Top10) -> None:
    token = t.person("tom").token
    answers = [
        t.gql.http.post(
            t.stack.gateway_url,
            content=b'{"query": "{ me { id }',
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        ),
        t.post({"query": "{ me { id "}, token),  # syntax error
        t.post({"query": WORK_ORDER, "variables": {"id": {"$ne": 1}}}, token),  # wrong type
        t.post({"query": WORK_ORDER, "variables": {"id": "'; DROP TABLE work_orders; --"}}, token),
    ]
    for response in answers:
        text = response.text
        assert response.status_code in (200, 400), text
        for leak in ("Traceback", 'File "', ".py", "sqlalchemy", "asyncpg", "stacktrace"):
            assert leak not in text, (leak, text)
        assert response.json()["errors"]
    # Honest: a well-formed query answers.
    assert t.post({"query": ME}, token).json()["data"]["me"]["id"]


# ---- API9:2023 Improper Inventory Management ---------------------------------------------------


def test_api9_federation_internals_and_debug_routes_are_not_exposed(t: Top10) -> None:
    token = t.acme.admin.token
    for query in (
        "{ _service { sdl } }",
        '{ _entities(representations: [{__typename: "User", id: "x"}]) { __typename } }',
    ):
        body = t.post({"query": query}, token).json()
        assert body.get("errors") and not body.get("data"), query
    base = t.stack.gateway_url.removesuffix("/graphql")
    for path in ("/docs", "/redoc", "/openapi.json", "/debug", "/graphql/schema", "/metrics/debug"):
        assert t.gql.http.get(base + path).status_code in (404, 405), path
    # Honest: the public API answers.
    assert t.post({"query": ME}, token).json()["data"]["me"]["id"] == t.acme.admin.user_id


# ---- API10:2023 Unsafe Consumption of APIs -----------------------------------------------------


class _LyingSubgraph:
    """A reverse proxy in front of a real subgraph that rewrites its answers the way a
    compromised or buggy upstream might: a wrong type for a field, a field nobody asked for,
    a stack trace in an error."""

    def __init__(self, upstream: str) -> None:
        from doorward_kit.net import free_port

        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        upstream = self.upstream

        async def graphql(request: Request) -> JSONResponse:
            payload = await request.body()
            async with httpx.AsyncClient(timeout=10) as client:
                real = await client.post(
                    upstream, content=payload, headers={"content-type": "application/json"}
                )
            body = real.json()
            data = body.get("data") or {}
            if isinstance(data.get("me"), dict):
                data["me"]["name"] = 12345  # a number where a String! must be
                data["me"]["passwordHash"] = "$argon2id$leaked"  # never asked for
                body.setdefault("errors", []).append(
                    {
                        "message": "boom",
                        "path": ["me", "username"],
                        "extensions": {
                            "code": "INTERNAL_SERVER_ERROR",
                            "stacktrace": ["Traceback: secret internals"],
                            "exception": {"stacktrace": ['File "/srv/accounts.py"']},
                        },
                    }
                )
            return JSONResponse(body)

        return Starlette(routes=[Route("/graphql", graphql, methods=["POST"])])

    def __enter__(self) -> _LyingSubgraph:
        import time

        import uvicorn

        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def test_api10_the_gateway_validates_what_a_subgraph_answers() -> None:
    """The gateway is Doorward's consumer of other APIs (the subgraphs). A production gateway
    over the gateway test subgraphs, one of them behind a lying proxy: a wrong type becomes an
    error (never passed on), an unrequested field and a stack trace never reach the client.
    Honest: the same query through a gateway over the real subgraph answers whole."""
    from tests.integration.gateway.conftest import gateway_settings, start_gateway
    from tests.integration.gateway.harness import start_subgraphs

    query = "{ me { id name username } }"
    subgraphs = start_subgraphs()
    try:
        with _LyingSubgraph(subgraphs.urls["accounts"]) as liar:
            lied = start_gateway(
                gateway_settings({**subgraphs.urls, "accounts": liar.url}, env="production")
            )
            try:
                response = lied.post(query)
            finally:
                lied.stop()
        body, text = response.json(), response.text
        assert body["data"] is None or body["data"]["me"] is None, text
        assert "passwordHash" not in text and "argon2" not in text
        assert "Traceback" not in text and "accounts.py" not in text and "stacktrace" not in text
        assert body["errors"], text

        honest = start_gateway(gateway_settings(subgraphs.urls, env="production"))
        try:
            answer = honest.post(query).json()
        finally:
            honest.stop()
        assert answer == {"data": {"me": {"id": "1", "name": "Ada", "username": "ada"}}}
    finally:
        subgraphs.stop()
