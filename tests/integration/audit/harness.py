"""Runs the real audit service in the test's event loop: real PostgreSQL, real uvicorn on a free
port, real grpc.aio on a free port; tokens from TestTokenIssuer (no identity needed)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import uvicorn

from deploy.pgroles import ServiceLogin, new_password, provision_logins
from doorward_kit.audit_client import AuditClient, AuditRecord, Outcome
from doorward_kit.auth import Role
from doorward_kit.grpc import ServiceChannel
from doorward_kit.net import free_port
from doorward_kit.runner import ServiceParts
from doorward_kit.settings import StackSettings
from services.audit.__main__ import build_parts
from services.audit.dbroles import OWNER_ROLE
from services.audit.runtime import AuditRuntime, run_checkpoints
from services.audit.settings import AuditSettings
from tests.fixtures.gateway_signing import gateway_keys, signed_as_gateway
from tests.fixtures.pki import ServicePki
from tests.fixtures.tokens import TestTokenIssuer

# The service whose certificate the harness appends with (any event producer would do).
PRODUCER = "workorders"


@dataclass
class AuditHarness:
    parts: ServiceParts
    runtime: AuditRuntime
    issuer: TestTokenIssuer
    db_url: str  # the service's own login
    login: str
    admin_dsn: str  # plain asyncpg DSN of the superuser, same database
    http_url: str
    grpc_target: str
    key_file: Path
    channel: ServiceChannel
    pki: ServicePki

    def token(self, *, org_id: str = "org-1", roles=(Role.AUDITOR,), **kw) -> str:
        return self.issuer.token(org_id=org_id, roles=roles, **kw)

    async def append(self, records: list[AuditRecord]) -> None:
        await AuditClient(self.channel, service_name=PRODUCER).append(records)

    async def checkpoint(self) -> int:
        return await run_checkpoints(self.runtime.db, self.runtime.service)

    async def graphql(self, query: str, token: str | None, variables: dict | None = None):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(timeout=30, auth=signed_as_gateway()) as client:
            response = await client.post(
                f"{self.http_url}/graphql",
                json={"query": query, "variables": variables or {}},
                headers=headers,
            )
        return response.json()

    async def superuser(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.admin_dsn)


def record(org_id: str = "org-1", **kw) -> AuditRecord:
    values = {
        "org_id": org_id,
        "actor_id": kw.pop("actor_id", str(uuid.uuid4())),
        "action": kw.pop("action", "workorder.update"),
        "outcome": kw.pop("outcome", Outcome.ALLOWED),
    }
    values.update(kw)
    return AuditRecord(**values)


@contextlib.asynccontextmanager
async def running_audit(
    postgres,
    *,
    pki: ServicePki | None = None,
    issuer: TestTokenIssuer | None = None,
    stack_overrides: dict | None = None,
    **settings_overrides,
) -> AsyncIterator[AuditHarness]:
    """`pki`, `issuer` and `stack_overrides` let a test run audit beside another service (the
    trace store) under the same CA and token issuer; by default audit runs alone."""
    # As `doorward up` does: the tables belong to the NOLOGIN owner, the service logs in as a
    # role that only inherits the writer's INSERT/SELECT (deploy/pgroles.py).
    dbname = f"audit_{uuid.uuid4().hex[:12]}"
    login = ServiceLogin("audit", dbname, f"{dbname}_login", OWNER_ROLE, new_password())
    provision_logins(postgres.admin_url(), [login])
    db_url = postgres.server.login_url(login.login, login.password, dbname)
    key_dir = Path(tempfile.mkdtemp(prefix="doorward-audit-key-"))
    pki = pki or ServicePki(key_dir / "tls")
    http_port, grpc_port = free_port(), free_port()
    stack = StackSettings(
        tls_dir=pki.folder("audit"),
        audit_http_port=http_port,
        audit_grpc_port=grpc_port,
        env="development",
        gateway_public_key_file=gateway_keys().public_file,
        **(stack_overrides or {}),
    )
    settings = AuditSettings(
        audit_db_url=db_url,
        audit_signing_key_file=key_dir / "audit-signing-key.pem",
        audit_checkpoint_interval=3600,
        **settings_overrides,
    )
    issuer = issuer or TestTokenIssuer()
    parts, runtime = await build_parts(stack, settings, verifier=issuer.verifier())
    server = uvicorn.Server(
        uvicorn.Config(parts.app, host="127.0.0.1", port=http_port, log_config=None, lifespan="off")
    )
    assert parts.grpc is not None
    await parts.grpc.start()
    serving = asyncio.create_task(server.serve())
    channel = ServiceChannel(f"127.0.0.1:{grpc_port}", pki.auth(PRODUCER), server="audit")
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        yield AuditHarness(
            parts=parts,
            runtime=runtime,
            issuer=issuer,
            db_url=db_url,
            login=login.login,
            admin_dsn=postgres.server.admin_url(dbname),
            http_url=f"http://127.0.0.1:{http_port}",
            grpc_target=f"127.0.0.1:{grpc_port}",
            key_file=settings.audit_signing_key_file,
            channel=channel,
            pki=pki,
        )
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        await channel.close()
        await parts.grpc.stop(0)
        if parts.close is not None:
            await parts.close()
        shutil.rmtree(key_dir, ignore_errors=True)
