"""The real identity service (migrations, FastAPI under uvicorn on a free port, grpc.aio on a
free port, its background senders) against the real test PostgreSQL. The audit and secrets
services it calls are small in-test gRPC servicers that record what they receive."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pyotp
import pytest
import pytest_asyncio
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc

from doorward_kit.db import Database
from doorward_kit.grpc import GrpcServer
from doorward_kit.net import free_port
from doorward_kit.runner import serving
from doorward_kit.settings import StackSettings
from services.audit.api.grpc import ALLOWED_CALLERS as AUDIT_CALLERS
from services.identity.__main__ import build_parts
from services.identity.bootstrap import bootstrap
from services.identity.runtime import Identity
from services.identity.settings import IdentitySettings
from services.secrets.api.grpc import ALLOWED_CALLERS as SECRETS_CALLERS
from tests.fixtures.gateway_signing import gateway_keys, signed_as_gateway
from tests.fixtures.pki import ServicePki

ADMIN_PASSWORD = "Bootstrap-Admin-Passphrase-1"
USER_PASSWORD = "Initial-Passphrase-For-Staff"
NEW_PASSWORD = "Changed-Passphrase-Of-Mine"


class RecordingAudit(audit_pb2_grpc.AuditServicer):
    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []

    async def AppendEvents(self, request: Any, context: Any) -> audit_pb2.AppendEventsResponse:
        known = {e.id for e in self.events}
        fresh = [e for e in request.events if e.id not in known]
        self.events.extend(fresh)
        return audit_pb2.AppendEventsResponse(
            accepted=len(fresh), duplicates=len(request.events) - len(fresh)
        )

    def of(self, action: str, org_id: str) -> list[audit_pb2.AuditEvent]:
        return [e for e in self.events if e.action == action and e.org_id == org_id]


class RecordingSecrets(secrets_pb2_grpc.SecretsServicer):
    def __init__(self) -> None:
        self.revocations: list[secrets_pb2.RevokeGrantsRequest] = []
        self.failures_left = 0

    async def RevokeGrants(self, request: Any, context: Any) -> secrets_pb2.RevokeGrantsResponse:
        if self.failures_left > 0:
            self.failures_left -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "secrets is down (test)")
        self.revocations.append(request)
        return secrets_pb2.RevokeGrantsResponse(revoked=1)

    def for_user(self, user_id: str) -> list[secrets_pb2.RevokeGrantsRequest]:
        return [r for r in self.revocations if r.user_id == user_id]


@dataclass
class Running:
    stack: StackSettings
    settings: IdentitySettings
    identity: Identity
    audit: RecordingAudit
    secrets: RecordingSecrets
    http_url: str
    grpc_target: str
    _orgs: list[str] = field(default_factory=list)

    @property
    def graphql_url(self) -> str:
        return self.http_url + "/graphql"

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        source_ip: str | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Subgraphs take the client address only from the gateway's signature.
        auth = signed_as_gateway(source_ip or "")
        async with httpx.AsyncClient(timeout=30, auth=auth) as client:
            response = await client.post(
                self.graphql_url,
                json={"query": query, "variables": variables or {}},
                headers=headers,
            )
        body: dict[str, Any] = response.json()
        return body


def error_code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or []
    return errors[0]["extensions"]["code"] if errors else None


LOGIN = """
mutation($email: String!, $password: String!, $otp: String) {
  login(email: $email, password: $password, otp: $otp) {
    accessToken refreshToken expiresAt passwordChangeRequired mfaEnrollmentRequired
    user { id email displayName roles status mfaEnabled regions { id name } }
  }
}"""


@dataclass
class Org:
    id: str
    name: str
    admin_id: str
    admin_email: str
    totp_secret: str
    admin_token: str


def otp_now(secret: str, *, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset)


async def login(
    running: Running, email: str, password: str, otp: str | None = None, **kw: Any
) -> dict[str, Any]:
    return await running.gql(LOGIN, {"email": email, "password": password, "otp": otp}, **kw)


async def new_org(running: Running) -> Org:
    name = f"org-{uuid.uuid4().hex[:10]}"
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    result = await bootstrap(
        running.identity.db, name, email, ADMIN_PASSWORD, settings=running.settings, migrate=False
    )
    assert result.totp_secret
    body = await login(running, email, ADMIN_PASSWORD, otp_now(result.totp_secret))
    assert "errors" not in body, body
    token = body["data"]["login"]["accessToken"]
    return Org(result.org_id, name, result.user_id, email, result.totp_secret, token)


CREATE_REGION = "mutation($n: String!) { createRegion(name: $n) { id name } }"
CREATE_USER = """
mutation($input: CreateUserInput!) {
  createUser(input: $input) { id email roles status regions { id name } }
}"""
CHANGE_PASSWORD = """
mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }"""


async def create_region(running: Running, org: Org, name: str) -> str:
    body = await running.gql(CREATE_REGION, {"n": name}, token=org.admin_token)
    assert "errors" not in body, body
    return str(body["data"]["createRegion"]["id"])


@dataclass
class Staff:
    id: str
    email: str
    token: str
    refresh_token: str


async def create_staff(
    running: Running, org: Org, roles: list[str], region_ids: list[str], *, log_in: bool = True
) -> Staff:
    email = f"staff-{uuid.uuid4().hex[:10]}@example.com"
    body = await running.gql(
        CREATE_USER,
        {
            "input": {
                "email": email,
                "displayName": f"Staff {roles[0].title()}",
                "roles": roles,
                "regionIds": region_ids,
                "initialPassword": USER_PASSWORD,
            }
        },
        token=org.admin_token,
    )
    assert "errors" not in body, body
    user_id = body["data"]["createUser"]["id"]
    if not log_in:
        return Staff(user_id, email, "", "")
    first = await login(running, email, USER_PASSWORD)
    restricted = first["data"]["login"]["accessToken"]
    changed = await running.gql(
        CHANGE_PASSWORD, {"c": USER_PASSWORD, "n": NEW_PASSWORD}, token=restricted
    )
    assert changed.get("data", {}).get("changePassword") is True, changed
    again = await login(running, email, NEW_PASSWORD)
    assert "errors" not in again, again
    payload = again["data"]["login"]
    return Staff(user_id, email, payload["accessToken"], payload["refreshToken"])


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def identity_service(postgres: Any, service_pki: ServicePki) -> AsyncIterator[Running]:
    db_url = postgres.fresh_database("identity")
    key_dir = Path(tempfile.mkdtemp(prefix="doorward-identity-keys-"))
    fakes_port = free_port()
    stack = StackSettings(
        host="127.0.0.1",
        identity_http_port=free_port(),
        identity_grpc_port=free_port(),
        audit_grpc_port=fakes_port,
        secrets_grpc_port=fakes_port,
        tls_dir=service_pki.folder("identity"),
        env="production",
        gateway_public_key_file=gateway_keys().public_file,
    )
    settings = IdentitySettings(
        identity_db_url=db_url,  # type: ignore[arg-type]
        identity_key_dir=key_dir / "keys",
        identity_argon2_time_cost=1,
        identity_argon2_memory_cost=8,
        identity_argon2_parallelism=1,
        identity_login_free_failures_account=3,
        identity_login_free_failures_address=25,
        identity_login_block_base_seconds=1.0,
        identity_outbox_poll_seconds=0.2,
    )
    fakes = GrpcServer("127.0.0.1", fakes_port, service_pki.fake_auth("audit", "secrets"))
    audit, secrets = RecordingAudit(), RecordingSecrets()
    audit_pb2_grpc.add_AuditServicer_to_server(audit, fakes.server)
    secrets_pb2_grpc.add_SecretsServicer_to_server(secrets, fakes.server)
    fakes.allow(AUDIT_CALLERS)
    fakes.allow(SECRETS_CALLERS)
    await fakes.start()

    parts, identity = await build_parts(stack, settings)
    assert parts.grpc is not None
    try:
        async with serving(parts, "identity"):
            yield Running(
                stack=stack,
                settings=settings,
                identity=identity,
                audit=audit,
                secrets=secrets,
                http_url=stack.http_url("identity"),
                grpc_target=stack.grpc_target("identity"),
            )
    finally:
        await fakes.stop(0.5)
        shutil.rmtree(key_dir, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def org(identity_service: Running) -> Org:
    return await new_org(identity_service)


@pytest.fixture
def running(identity_service: Running) -> Running:
    return identity_service


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    assert predicate()


def db_of(running: Running) -> Database:
    return running.identity.db
