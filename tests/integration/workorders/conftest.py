"""The real workorders service (migrations, FastAPI under uvicorn on a free port, grpc.aio on a
free port, its outbox senders) against the real test PostgreSQL. identity, secrets and audit are
small in-test gRPC servicers on a free port; tokens are real EdDSA JWTs (TestTokenIssuer)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import hvac
import hvac.exceptions
import jwt
import pytest_asyncio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc
from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from deploy.embedded import TRANSIT_MOUNT
from doorward_kit.auth import Role
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import GrpcServer, abort_with
from doorward_kit.net import free_port
from doorward_kit.runner import serving
from doorward_kit.settings import StackSettings
from services.audit.api.grpc import ALLOWED_CALLERS as AUDIT_CALLERS
from services.identity.api.grpc import ALLOWED_CALLERS as IDENTITY_CALLERS
from services.secrets.api.grpc import ALLOWED_CALLERS as SECRETS_CALLERS
from services.workorders.__main__ import build_parts
from services.workorders.runtime import Runtime
from services.workorders.settings import WorkOrdersSettings
from tests.fixtures.gateway_signing import gateway_keys, signed_as_gateway
from tests.fixtures.pki import ServicePki
from tests.fixtures.tokens import TestTokenIssuer


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _bearer(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return str(value)
    return None


def _claims(context: Any) -> dict[str, Any]:
    """The (unverified: this is a fake) claims of the access token a call carries; the real
    services verify it and take org and user from it, so the fakes do the same."""
    bearer = _bearer(context) or ""
    if not bearer.startswith("Bearer "):
        return {}
    claims: dict[str, Any] = jwt.decode(bearer[7:], options={"verify_signature": False})
    return claims


FRESH_OTP = "123456"


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

    def of(self, org_id: str, action: str) -> list[audit_pb2.AuditEvent]:
        return [e for e in self.events if e.org_id == org_id and e.action == action]


class FakeIdentity(identity_pb2_grpc.IdentityServicer):
    def __init__(self) -> None:
        self.users: dict[str, identity_pb2.User] = {}
        # (user id, purpose, binding) of every step-up that passed.
        self.step_ups: list[tuple[str, str, str]] = []

    async def VerifyStepUp(self, request: Any, context: Any) -> identity_pb2.StepUp:
        claims = _claims(context)
        if not claims:
            await abort_with(context, DoorwardError(ErrorCode.UNAUTHENTICATED, "no token"))
        if request.otp != FRESH_OTP:
            await abort_with(context, DoorwardError(ErrorCode.FORBIDDEN, "wrong code (test)"))
        self.step_ups.append((claims["sub"], request.purpose, request.binding))
        return identity_pb2.StepUp(
            assertion=f"step-up:{claims['sub']}:{request.purpose}:{request.binding}",
            expires_at=int(time.time()) + 900,
        )

    async def GetUsers(self, request: Any, context: Any) -> identity_pb2.GetUsersResponse:
        return identity_pb2.GetUsersResponse(
            users=[
                self.users[u]
                for u in request.user_ids
                if u in self.users and self.users[u].org_id == request.org_id
            ]
        )

    async def GetRegions(self, request: Any, context: Any) -> identity_pb2.GetRegionsResponse:
        # The organisation's regions are the ones its people hold.
        known = {r for u in self.users.values() if u.org_id == request.org_id for r in u.region_ids}
        return identity_pb2.GetRegionsResponse(
            regions=[
                identity_pb2.Region(id=r, org_id=request.org_id)
                for r in request.region_ids
                if r in known
            ]
        )


class FakeSecrets(secrets_pb2_grpc.SecretsServicer):
    """Holds refs and per-customer wrapping keys in memory; records what it was asked."""

    def __init__(self) -> None:
        self.refs: dict[str, secrets_pb2.SecretRef] = {}
        self.uploads: list[tuple[secrets_pb2.PrepareUploadRequest, str | None]] = []
        self.grants: list[tuple[secrets_pb2.IssueGrantRequest, str | None]] = []
        self.revocations: list[secrets_pb2.RevokeGrantsRequest] = []
        self.deleted_sites: list[str] = []
        self.masters: dict[str, bytes] = {}
        self.destroyed: set[str] = set()
        self.revoke_failures_left = 0
        self.decrypt_calls = 0

    async def PrepareUpload(self, request: Any, context: Any) -> secrets_pb2.UploadSlot:
        self.uploads.append((request, _bearer(context)))
        org_id = _claims(context).get("org", "")
        if request.secret_ref_id:
            ref = self.refs[request.secret_ref_id]
        else:
            ref = secrets_pb2.SecretRef(
                id=str(uuid.uuid4()),
                org_id=org_id,
                site_id=request.site_id,
                region_id=request.region_id,
                kind=request.kind,
                label=request.label,
                version=1,
                updated_at=_ts(datetime.now(UTC)),
            )
            self.refs[ref.id] = ref
        return secrets_pb2.UploadSlot(
            secret_ref=ref,
            upload_url=f"http://secrets.test/v1/uploads/{uuid.uuid4()}",
            upload_token="upl-" + uuid.uuid4().hex,
            expires_at=_ts(datetime.now(UTC) + timedelta(minutes=5)),
        )

    async def IssueGrant(self, request: Any, context: Any) -> secrets_pb2.Grant:
        self.grants.append((request, _bearer(context)))
        return secrets_pb2.Grant(
            id=str(uuid.uuid4()),
            secret_ref=self.refs[request.secret_ref_id],
            work_order_id=request.work_order_id,
            expires_at=_ts(datetime.now(UTC) + timedelta(seconds=60)),
            reveal_url=f"http://secrets.test/v1/reveals/{uuid.uuid4()}",
            reveal_token="rvl-" + uuid.uuid4().hex,
        )

    async def RevokeGrants(self, request: Any, context: Any) -> secrets_pb2.RevokeGrantsResponse:
        if self.revoke_failures_left > 0:
            self.revoke_failures_left -= 1
            await abort_with(context, DoorwardError(ErrorCode.UNAVAILABLE, "secrets down (test)"))
        self.revocations.append(request)
        return secrets_pb2.RevokeGrantsResponse(revoked=1)

    async def GetSecretRefs(self, request: Any, context: Any) -> secrets_pb2.GetSecretRefsResponse:
        ids, sites = set(request.secret_ref_ids), set(request.site_ids)
        return secrets_pb2.GetSecretRefsResponse(
            secret_refs=[
                r
                for r in self.refs.values()
                if r.org_id == request.org_id and (r.id in ids or r.site_id in sites)
            ]
        )

    async def DeleteSiteSecrets(
        self, request: Any, context: Any
    ) -> secrets_pb2.DeleteSiteSecretsResponse:
        if "ADMIN" not in _claims(context).get("roles", []):
            await abort_with(context, DoorwardError(ErrorCode.UNAUTHENTICATED, "no admin"))
        self.deleted_sites.append(request.site_id)
        gone = [k for k, r in self.refs.items() if r.site_id == request.site_id]
        for key in gone:
            del self.refs[key]
        return secrets_pb2.DeleteSiteSecretsResponse(deleted=len(gone))

    # When set (an hvac client), data keys come from real Vault transit, one key per customer.
    vault: Any = None

    def _vault_key(self, request: Any) -> str:
        return f"wo-test-{request.customer_id}"

    async def CreateDataKey(self, request: Any, context: Any) -> secrets_pb2.DataKey:
        if self.vault is not None:
            name = self._vault_key(request)
            self.vault.secrets.transit.create_key(name=name, mount_point=TRANSIT_MOUNT)
            data = self.vault.secrets.transit.generate_data_key(
                name=name, key_type="plaintext", mount_point=TRANSIT_MOUNT
            )["data"]
            return secrets_pb2.DataKey(
                plaintext=base64.b64decode(data["plaintext"]),
                ciphertext=data["ciphertext"].encode(),
                key_version=int(data.get("key_version", 1)),
            )
        master = self.masters.setdefault(request.customer_id, AESGCM.generate_key(256))
        plaintext = AESGCM.generate_key(256)
        nonce = os.urandom(12)
        wrapped = nonce + AESGCM(master).encrypt(nonce, plaintext, request.customer_id.encode())
        return secrets_pb2.DataKey(plaintext=plaintext, ciphertext=wrapped, key_version=1)

    async def DecryptDataKey(self, request: Any, context: Any) -> secrets_pb2.DataKey:
        self.decrypt_calls += 1
        if self.vault is not None:
            try:
                data = self.vault.secrets.transit.decrypt_data(
                    name=self._vault_key(request),
                    ciphertext=bytes(request.ciphertext).decode(),
                    mount_point=TRANSIT_MOUNT,
                )["data"]
            except hvac.exceptions.VaultError:
                await abort_with(context, DoorwardError(ErrorCode.NOT_FOUND, "customer key"))
            return secrets_pb2.DataKey(plaintext=base64.b64decode(data["plaintext"]))
        master = self.masters.get(request.customer_id)
        if master is None:
            await abort_with(context, DoorwardError(ErrorCode.NOT_FOUND, "customer key not found"))
        assert master is not None
        try:
            blob = bytes(request.ciphertext)
            plaintext = AESGCM(master).decrypt(blob[:12], blob[12:], request.customer_id.encode())
        except InvalidTag:
            await abort_with(context, DoorwardError(ErrorCode.BAD_USER_INPUT, "bad ciphertext"))
            raise
        return secrets_pb2.DataKey(plaintext=plaintext, key_version=1)

    async def DestroyCustomerKey(
        self, request: Any, context: Any
    ) -> secrets_pb2.DestroyCustomerKeyResponse:
        if "ADMIN" not in _claims(context).get("roles", []):
            await abort_with(context, DoorwardError(ErrorCode.UNAUTHENTICATED, "no admin"))
        self.masters.pop(request.customer_id, None)
        self.destroyed.add(request.customer_id)
        if self.vault is not None:
            name = self._vault_key(request)
            self.vault.secrets.transit.update_key_configuration(
                name=name, deletion_allowed=True, mount_point=TRANSIT_MOUNT
            )
            self.vault.secrets.transit.delete_key(name=name, mount_point=TRANSIT_MOUNT)
        return secrets_pb2.DestroyCustomerKeyResponse()


@dataclass
class Person:
    id: str
    token: str
    roles: tuple[Role, ...]
    regions: tuple[str, ...]


@dataclass
class Org:
    id: str
    r1: str
    r2: str
    admin: Person
    dispatcher: Person  # holds r1
    dispatcher_r2: Person  # holds r2 only
    tech: Person  # r1
    tech2: Person  # r1
    sub: Person  # r1, SUBCONTRACTOR
    auditor: Person
    inactive_tech: Person  # r1, DEACTIVATED
    tech_r2: Person  # r2 only


@dataclass
class Running:
    stack: StackSettings
    runtime: Runtime
    issuer: TestTokenIssuer
    audit: RecordingAudit
    identity: FakeIdentity
    secrets: FakeSecrets
    http_url: str
    grpc_target: str
    pki: ServicePki
    _orgs: list[Org] = field(default_factory=list)

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(timeout=30, auth=signed_as_gateway()) as client:
            response = await client.post(
                self.http_url + "/graphql",
                json={"query": query, "variables": variables or {}},
                headers=headers,
            )
        body: dict[str, Any] = response.json()
        return body

    def person(
        self,
        org_id: str,
        roles: tuple[Role, ...],
        regions: tuple[str, ...],
        *,
        active: bool = True,
    ) -> Person:
        user_id = str(uuid.uuid4())
        token = self.issuer.token(
            user_id=user_id, org_id=org_id, roles=roles, regions=regions, lifetime=600
        )
        self.identity.users[user_id] = identity_pb2.User(
            id=user_id,
            org_id=org_id,
            display_name="Test person",
            roles=[r.value for r in roles],
            region_ids=list(regions),
            status=identity_pb2.ACTIVE if active else identity_pb2.DEACTIVATED,
        )
        return Person(user_id, token, roles, regions)

    def new_org(self) -> Org:
        org_id, r1, r2 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        p = self.person
        return Org(
            id=org_id,
            r1=r1,
            r2=r2,
            admin=p(org_id, (Role.ADMIN,), (r1, r2)),
            dispatcher=p(org_id, (Role.DISPATCHER,), (r1,)),
            dispatcher_r2=p(org_id, (Role.DISPATCHER,), (r2,)),
            tech=p(org_id, (Role.TECHNICIAN,), (r1,)),
            tech2=p(org_id, (Role.TECHNICIAN,), (r1,)),
            sub=p(org_id, (Role.SUBCONTRACTOR,), (r1,)),
            auditor=p(org_id, (Role.AUDITOR,), (r1, r2)),
            inactive_tech=p(org_id, (Role.TECHNICIAN,), (r1,), active=False),
            tech_r2=p(org_id, (Role.TECHNICIAN,), (r2,)),
        )


def error_code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or []
    return errors[0]["extensions"]["code"] if errors else None


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    assert predicate()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def workorders_service(postgres: Any, service_pki: ServicePki) -> AsyncIterator[Running]:
    db_url = postgres.fresh_database("workorders")
    fakes_port = free_port()
    stack = StackSettings(
        host="127.0.0.1",
        workorders_http_port=free_port(),
        workorders_grpc_port=free_port(),
        audit_grpc_port=fakes_port,
        secrets_grpc_port=fakes_port,
        identity_grpc_port=fakes_port,
        tls_dir=service_pki.folder("workorders"),
        env="production",
        gateway_public_key_file=gateway_keys().public_file,
    )
    settings = WorkOrdersSettings(
        workorders_db_url=db_url,
        workorders_outbox_poll_seconds=0.1,
    )
    fakes = GrpcServer(
        "127.0.0.1", fakes_port, service_pki.fake_auth("audit", "identity", "secrets")
    )
    for table in (AUDIT_CALLERS, IDENTITY_CALLERS, SECRETS_CALLERS):
        fakes.allow(table)
    audit, identity, secrets = RecordingAudit(), FakeIdentity(), FakeSecrets()
    audit_pb2_grpc.add_AuditServicer_to_server(audit, fakes.server)
    identity_pb2_grpc.add_IdentityServicer_to_server(identity, fakes.server)
    secrets_pb2_grpc.add_SecretsServicer_to_server(secrets, fakes.server)
    await fakes.start()

    issuer = TestTokenIssuer()
    parts, runtime = await build_parts(stack, settings, verifier=issuer.verifier())
    assert parts.grpc is not None
    try:
        async with serving(parts, "workorders"):
            yield Running(
                stack=stack,
                runtime=runtime,
                issuer=issuer,
                audit=audit,
                identity=identity,
                secrets=secrets,
                http_url=stack.http_url("workorders"),
                grpc_target=stack.grpc_target("workorders"),
                pki=service_pki,
            )
    finally:
        await fakes.stop(0.5)


@pytest_asyncio.fixture(loop_scope="session")
async def running(workorders_service: Running) -> Running:
    return workorders_service


@pytest_asyncio.fixture(loop_scope="session")
async def org(workorders_service: Running) -> Org:
    return workorders_service.new_org()


# ---- GraphQL documents and scenario helpers -------------------------------------------------

WO_FIELDS = """id number title description status priority scheduledStart scheduledEnd
  createdAt completedAt region { id } assignee { id } site { id }
  secretRefs { id kind label version } invoiceLines { id description quantity unitPrice total }"""

CREATE_CUSTOMER = """mutation($input: CreateCustomerInput!) {
  createCustomer(input: $input) { id region { id } } }"""
CREATE_SITE = """mutation($input: CreateSiteInput!) { createSite(input: $input) { id } }"""
CREATE_WO = (
    "mutation($input: CreateWorkOrderInput!) { createWorkOrder(input: $input) { "
    + WO_FIELDS
    + " } }"
)
ASSIGN = "mutation($id: ID!, $a: ID!) { assignWorkOrder(id: $id, assigneeId: $a) { id status assignee { id } } }"
DISPATCH = "mutation($id: ID!) { dispatchWorkOrder(id: $id) { id status } }"
START = "mutation($id: ID!) { startWorkOrder(id: $id) { id status } }"
COMPLETE = "mutation($id: ID!) { completeWorkOrder(id: $id) { id status completedAt } }"
CANCEL = "mutation($id: ID!, $r: String!) { cancelWorkOrder(id: $id, reason: $r) { id status } }"
UPDATE = "mutation($id: ID!, $input: UpdateWorkOrderInput!) { updateWorkOrder(id: $id, input: $input) { id status scheduledStart scheduledEnd title } }"
WORK_ORDER = "query($id: ID!) { workOrder(id: $id) { " + WO_FIELDS + " } }"
PREPARE_UPLOAD = """mutation($s: ID!, $k: SecretKind!, $l: String!) {
  prepareSecretUpload(siteId: $s, kind: $k, label: $l) {
    secretRef { id kind label version } uploadUrl uploadToken expiresAt } }"""
ATTACH = """mutation($w: ID!, $s: ID!) { attachSecret(workOrderId: $w, secretRefId: $s) {
  id secretRefs { id } } }"""
REQUEST_ACCESS = """mutation($w: ID!, $s: ID!) { requestSecretAccess(workOrderId: $w, secretRefId: $s) {
  id expiresAt revealUrl revealToken secretRef { id } workOrder { id } } }"""


def iso(value: datetime) -> str:
    return value.isoformat()


@dataclass
class Job:
    customer_id: str
    site_id: str
    work_order_id: str
    secret_ref_id: str


async def ok(running: Running, query: str, variables: dict[str, Any], token: str) -> Any:
    body = await running.gql(query, variables, token=token)
    assert "errors" not in body, body
    return body["data"]


async def make_customer(
    running: Running,
    org: Org,
    *,
    token: str | None = None,
    region: str | None = None,
    name: str = "Ada Customer",
    phone: str = "+44 20 7946 0991",
    email: str = "ada@example.com",
    address: str = "1 Keyhole Lane, Lockton",
) -> tuple[str, str]:
    token = token or org.dispatcher.token
    region = region or org.r1
    data = await ok(
        running,
        CREATE_CUSTOMER,
        {"input": {"name": name, "phone": phone, "email": email, "regionId": region}},
        token,
    )
    customer_id = data["createCustomer"]["id"]
    data = await ok(
        running,
        CREATE_SITE,
        {"input": {"customerId": customer_id, "address": address, "regionId": region}},
        token,
    )
    return customer_id, data["createSite"]["id"]


async def make_job(
    running: Running,
    org: Org,
    *,
    assignee: Person | None = None,
    start_in: timedelta = timedelta(minutes=-10),
    length: timedelta = timedelta(hours=2),
    dispatch: bool = True,
    site: tuple[str, str] | None = None,
    with_secret: bool = True,
) -> Job:
    """A job in r1 (by the r1 dispatcher), assigned and dispatched, in its window by default."""
    customer_id, site_id = site or await make_customer(running, org)
    now = datetime.now(UTC)
    data = await ok(
        running,
        CREATE_WO,
        {
            "input": {
                "siteId": site_id,
                "title": "Replace lock cylinder",
                "description": "Front door",
                "priority": "HIGH",
                "scheduledStart": iso(now + start_in),
                "scheduledEnd": iso(now + start_in + length),
            }
        },
        org.dispatcher.token,
    )
    wo_id = data["createWorkOrder"]["id"]
    secret_id = ""
    if with_secret:
        data = await ok(
            running,
            PREPARE_UPLOAD,
            {"s": site_id, "k": "DOOR_CODE", "l": "Front door"},
            org.dispatcher.token,
        )
        secret_id = data["prepareSecretUpload"]["secretRef"]["id"]
        await ok(running, ATTACH, {"w": wo_id, "s": secret_id}, org.dispatcher.token)
    assignee = assignee or org.tech
    await ok(running, ASSIGN, {"id": wo_id, "a": assignee.id}, org.dispatcher.token)
    if dispatch:
        await ok(running, DISPATCH, {"id": wo_id}, org.dispatcher.token)
    return Job(customer_id, site_id, wo_id, secret_id)
