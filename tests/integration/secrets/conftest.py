"""The real secrets service (migrations, FastAPI under uvicorn on a free port, grpc.aio on a free
port, its renewer/sweeper/outbox sender) against the real test PostgreSQL and real OpenBao. The
audit and workorders services it calls are small in-test gRPC servicers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from doorward.workorders.v1 import workorders_pb2, workorders_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from doorward_kit.auth import (
    PURPOSE_BREAK_GLASS_APPROVE,
    PURPOSE_BREAK_GLASS_REQUEST,
    Role,
    SessionGuard,
    break_glass_binding,
)
from doorward_kit.grpc import GrpcServer, ServiceChannel
from doorward_kit.logging import JsonFormatter
from doorward_kit.net import free_port
from doorward_kit.runner import serving
from doorward_kit.settings import StackSettings
from doorward_kit.telemetry import setup_telemetry
from services.audit.api.grpc import ALLOWED_CALLERS as AUDIT_CALLERS
from services.secrets.__main__ import build_parts
from services.secrets.service.secrets import SecretsService
from services.secrets.settings import SecretsSettings
from services.workorders.api.grpc import ALLOWED_CALLERS as WORKORDERS_CALLERS
from tests.fixtures.pki import ServicePki
from tests.fixtures.tokens import TestTokenIssuer

RATE_LIMIT = 25


class RecordingAudit(audit_pb2_grpc.AuditServicer):
    """Collects events; `fail = True` makes it refuse everything (UNAVAILABLE)."""

    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []
        self.fail = False

    async def AppendEvents(self, request: Any, context: Any) -> audit_pb2.AppendEventsResponse:
        if self.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "audit is down (test)")
        known = {e.id for e in self.events}
        fresh = [e for e in request.events if e.id not in known]
        self.events.extend(fresh)
        return audit_pb2.AppendEventsResponse(
            accepted=len(fresh), duplicates=len(request.events) - len(fresh)
        )

    def of(self, org_id: str, action: str | None = None) -> list[audit_pb2.AuditEvent]:
        return [
            e for e in self.events if e.org_id == org_id and (action is None or e.action == action)
        ]

    async def wait_for(
        self, org_id: str, action: str, *, reason: str | None = None, timeout: float = 5.0
    ) -> audit_pb2.AuditEvent:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.of(org_id, action):
                if reason is None or event.details.get("reason") == reason:
                    return event
            if asyncio.get_running_loop().time() > deadline:
                seen = [(e.action, dict(e.details)) for e in self.of(org_id)]
                raise AssertionError(f"no {action} ({reason}) event; saw {seen}")
            await asyncio.sleep(0.05)


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


class FakeWorkOrders(workorders_pb2_grpc.WorkOrdersServicer):
    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], workorders_pb2.AccessContext] = {}

    async def GetAccessContext(self, request: Any, context: Any) -> workorders_pb2.AccessContext:
        job = self.jobs.get((request.org_id, request.work_order_id))
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "work order not found")
        return job

    def put(
        self,
        *,
        org_id: str,
        work_order_id: str,
        site_id: str,
        assignee_id: str,
        status: str = "DISPATCHED",
        start: datetime | None = None,
        end: datetime | None = None,
        secret_ref_ids: tuple[str, ...] = (),
        lead_seconds: int = 900,
        grace_seconds: int = 900,
    ) -> workorders_pb2.AccessContext:
        now = datetime.now(UTC)
        job = workorders_pb2.AccessContext(
            work_order_id=work_order_id,
            org_id=org_id,
            site_id=site_id,
            region_id="region-1",
            assignee_id=assignee_id,
            status=status,
            scheduled_start=_ts(start or now - timedelta(minutes=5)),
            scheduled_end=_ts(end or now + timedelta(hours=1)),
            lead_seconds=lead_seconds,
            grace_seconds=grace_seconds,
            secret_ref_ids=list(secret_ref_ids),
        )
        self.jobs[(org_id, work_order_id)] = job
        return job


class ListHandler(logging.Handler):
    """Every log line, formatted exactly as production writes it (JSON, redacted)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter("secrets"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Job:
    org_id: str
    work_order_id: str
    site_id: str
    user_id: str
    token: str
    context: workorders_pb2.AccessContext


@dataclass
class SecretsHarness:
    """One running secrets service with its fakes. Use `org()` for an isolated organisation."""

    service: SecretsService
    http: httpx.AsyncClient
    stub: secrets_pb2_grpc.SecretsStub
    channel: ServiceChannel
    audit: RecordingAudit
    workorders: FakeWorkOrders
    issuer: TestTokenIssuer
    base_url: str
    db_url: str
    logs: ListHandler
    pki: ServicePki
    target: str
    _stop: list[Any] = field(default_factory=list)
    _others: dict[str, ServiceChannel] = field(default_factory=dict)

    async def call(
        self, method: str, request: Any, token: str | None = None, *, caller: str = "workorders"
    ) -> Any:
        """A gRPC call as `caller` makes it (workorders unless a test says otherwise): that
        process's certificate, plus the access token of the user it acts for (`token`; None =
        the process's own credentials only)."""
        if caller == "workorders":
            stub, channel = self.stub, self.channel
        else:
            if caller not in self._others:
                self._others[caller] = ServiceChannel(
                    self.target, self.pki.auth(caller), server="secrets"
                )
            channel = self._others[caller]
            stub = secrets_pb2_grpc.SecretsStub(channel.channel)
        return await getattr(stub, method)(request, metadata=channel.metadata(token))

    async def close_others(self) -> None:
        for channel in self._others.values():
            await channel.close()

    def token(self, user_id: str, org_id: str, roles: tuple[Role, ...] = (Role.TECHNICIAN,)) -> str:
        return self.issuer.token(user_id=user_id, org_id=org_id, roles=roles)

    async def new_secret(
        self, org_id: str, value: str, *, site_id: str | None = None
    ) -> tuple[str, str]:
        """Prepare + upload a value as a dispatcher; returns (secret_ref_id, site_id)."""
        site_id = site_id or str(uuid.uuid4())
        dispatcher = str(uuid.uuid4())
        token = self.token(dispatcher, org_id, (Role.DISPATCHER,))
        slot = await self.call(
            "PrepareUpload",
            secrets_pb2.PrepareUploadRequest(
                site_id=site_id, region_id="region-1", kind="DOOR_CODE", label="Back door"
            ),
            token,
        )
        response = await self.http.put(
            slot.upload_url,
            headers={"Authorization": f"Bearer {token}"},
            json={"uploadToken": slot.upload_token, "value": value},
        )
        assert response.status_code == 201, response.text
        return slot.secret_ref.id, site_id

    async def job(self, org_id: str, secret_ref_id: str, site_id: str, **kwargs: Any) -> Job:
        user_id = str(uuid.uuid4())
        work_order_id = str(uuid.uuid4())
        context = self.workorders.put(
            org_id=org_id,
            work_order_id=work_order_id,
            site_id=site_id,
            assignee_id=user_id,
            secret_ref_ids=(secret_ref_id,),
            **kwargs,
        )
        return Job(org_id, work_order_id, site_id, user_id, self.token(user_id, org_id), context)

    async def grant(self, job: Job, secret_ref_id: str, **kwargs: Any) -> secrets_pb2.Grant:
        c = job.context
        start = c.scheduled_start.ToDatetime(tzinfo=UTC) - timedelta(seconds=c.lead_seconds)
        end = c.scheduled_end.ToDatetime(tzinfo=UTC) + timedelta(seconds=c.grace_seconds)
        token = kwargs.pop("token", job.token)
        request = secrets_pb2.IssueGrantRequest(
            work_order_id=job.work_order_id,
            secret_ref_id=secret_ref_id,
            window_start=_ts(kwargs.pop("window_start", start)),
            window_end=_ts(kwargs.pop("window_end", end)),
            **kwargs,
        )
        return await self.call("IssueGrant", request, token)

    def break_glass(
        self,
        job: Job,
        secret_ref_id: str,
        admin: str,
        reason: str,
        *,
        approvers: tuple[str, ...] = (),
        request_id: str | None = None,
    ) -> tuple[str, secrets_pb2.BreakGlassApproval]:
        """An ADMIN's token and the approval workorders passes after identity's step-ups."""
        request_id = request_id or str(uuid.uuid4())
        binding = break_glass_binding(request_id, secret_ref_id, job.work_order_id, reason)
        approval = secrets_pb2.BreakGlassApproval(
            request_id=request_id,
            step_up=self.issuer.step_up(
                user_id=admin,
                org_id=job.org_id,
                purpose=PURPOSE_BREAK_GLASS_REQUEST,
                binding=binding,
            ),
            approvals=[
                self.issuer.step_up(
                    user_id=other,
                    org_id=job.org_id,
                    purpose=PURPOSE_BREAK_GLASS_APPROVE,
                    binding=request_id,
                )
                for other in approvers
            ],
        )
        return self.token(admin, job.org_id, (Role.ADMIN,)), approval

    async def reveal(
        self, grant: secrets_pb2.Grant, access_token: str | None, reveal_token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        return await self.http.post(
            grant.reveal_url,
            headers=headers,
            json={"revealToken": reveal_token if reveal_token is not None else grant.reveal_token},
        )


def error_code(error: grpc.aio.AioRpcError) -> str:
    trailing = dict(error.trailing_metadata() or ())
    return str(trailing.get("x-doorward-error-code", ""))


@contextlib.asynccontextmanager
async def running_secrets(
    *,
    db_url: str,
    vault_addr: str,
    role_id: str,
    secret_id: str,
    audit: RecordingAudit | None = None,
    workorders: FakeWorkOrders | None = None,
    guard: SessionGuard | None = None,
    pki: ServicePki | None = None,
    **settings: Any,
) -> AsyncIterator[SecretsHarness]:
    setup_telemetry("secrets-tests")
    audit = audit or RecordingAudit()
    workorders = workorders or FakeWorkOrders()
    host = "127.0.0.1"
    own_pki = pki is None
    if pki is None:
        pki = ServicePki(Path(tempfile.mkdtemp(prefix="doorward-secrets-pki-")))
    http_port, grpc_port, audit_port, wo_port = (free_port() for _ in range(4))
    stack = StackSettings(
        host=host,
        secrets_http_port=http_port,
        secrets_grpc_port=grpc_port,
        audit_grpc_port=audit_port,
        workorders_grpc_port=wo_port,
        tls_dir=pki.folder("secrets"),
    )
    fakes = GrpcServer(host, audit_port, pki.auth("audit"))
    audit_pb2_grpc.add_AuditServicer_to_server(audit, fakes.server)
    fakes.allow(AUDIT_CALLERS)
    wo_server = GrpcServer(host, wo_port, pki.auth("workorders"))
    workorders_pb2_grpc.add_WorkOrdersServicer_to_server(workorders, wo_server.server)
    wo_server.allow(WORKORDERS_CALLERS)
    await fakes.start()
    await wo_server.start()

    logs = ListHandler()
    root = logging.getLogger()
    root.addHandler(logs)
    previous_level = root.level
    root.setLevel(logging.INFO)

    issuer = TestTokenIssuer()
    options: dict[str, Any] = {
        "secrets_reveal_rate_limit": RATE_LIMIT,
        "secrets_sweep_seconds": 0.5,
        **settings,
    }
    config = SecretsSettings(
        secrets_db_url=db_url,  # type: ignore[arg-type]
        vault_addr=vault_addr,
        vault_role_id=role_id,
        vault_secret_id=secret_id,  # type: ignore[arg-type]
        **options,
    )
    try:
        parts, service = await build_parts(stack, config, verifier=issuer.verifier(guard))
    except BaseException:
        await fakes.stop(0)
        await wo_server.stop(0)
        root.removeHandler(logs)
        raise
    assert parts.grpc is not None
    running = serving(parts, "secrets")
    await running.__aenter__()
    channel = ServiceChannel(stack.grpc_target("secrets"), pki.auth("workorders"), server="secrets")
    http = httpx.AsyncClient(timeout=10.0)
    try:
        harness = SecretsHarness(
            service=service,
            http=http,
            stub=secrets_pb2_grpc.SecretsStub(channel.channel),
            channel=channel,
            audit=audit,
            workorders=workorders,
            issuer=issuer,
            base_url=stack.secrets_base_url,
            db_url=db_url,
            logs=logs,
            pki=pki,
            target=stack.grpc_target("secrets"),
        )
        yield harness
        await harness.close_others()
    finally:
        if own_pki:
            shutil.rmtree(pki.root, ignore_errors=True)
        await http.aclose()
        await channel.close()
        await running.__aexit__(None, None, None)
        await fakes.stop(0)
        await wo_server.stop(0)
        root.removeHandler(logs)
        root.setLevel(previous_level)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def secrets_svc(postgres: Any, openbao: Any) -> AsyncIterator[SecretsHarness]:
    db_url = postgres.fresh_database("secrets")
    async with running_secrets(
        db_url=db_url,
        vault_addr=openbao.addr,
        role_id=openbao.role_id,
        secret_id=openbao.secret_id,
    ) as harness:
        yield harness


@pytest.fixture
def org_id() -> str:
    return str(uuid.uuid4())
