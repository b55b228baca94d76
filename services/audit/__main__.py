"""`python -m services.audit`: migrations, then FastAPI (GraphQL, /export) and gRPC in one loop."""

from __future__ import annotations

import asyncio

from doorward_kit.auth import TokenVerifier
from doorward_kit.db import Database
from doorward_kit.graphql import GatewayGate
from doorward_kit.grpc import GrpcServer, InternalAuth, ServiceChannel
from doorward_kit.http import create_app
from doorward_kit.logging import register_secret
from doorward_kit.nonce_ledger import PostgresNonceLedger
from doorward_kit.runner import ServiceParts, run_service
from doorward_kit.session_guard import build_token_verifier
from doorward_kit.settings import StackSettings
from doorward_kit.subgraph_edge import mount_subgraph
from services.audit.api.graphql import build_router
from services.audit.api.grpc import add_to_server
from services.audit.api.http import export_router
from services.audit.dbroles import ensure_schema
from services.audit.runtime import AuditRuntime, checkpoint_loop, verification_loop
from services.audit.service import AuditService
from services.audit.settings import AuditSettings
from services.audit.signing import load_or_create_signer
from services.audit.trace_store import TraceStoreClient


async def build_parts(
    stack: StackSettings,
    settings: AuditSettings,
    *,
    verifier: TokenVerifier | None = None,
) -> tuple[ServiceParts, AuditRuntime]:
    """Everything but the serving; tests pass their own verifier (no identity running)."""
    auth = InternalAuth.from_stack(stack, "audit")
    if auth.token:
        register_secret(auth.token)
    # Migrations run as the owner role (doorward up does it first); see dbroles.py.
    await ensure_schema(settings.db_url)
    db = Database(settings.db_url, pool_size=stack.db_pool_size, max_overflow=0)
    # A signed request's nonce is good once across every replica (its own database).
    nonces = PostgresNonceLedger(settings.db_url)
    signer = await asyncio.to_thread(
        load_or_create_signer,
        settings.audit_signing_key_file,
        create=stack.env == "development",
    )
    service = AuditService(rules=settings.alert_rules(), signer=signer)
    guard = None
    if verifier is None:
        verifier, guard = build_token_verifier(stack, auth)
    traces = None
    if settings.audit_trace_store:
        traces = TraceStoreClient(
            ServiceChannel(stack.grpc_target("traces"), auth, stack.grpc_deadline, server="traces")
        )
    runtime = AuditRuntime(db=db, service=service, verifier=verifier, traces=traces)

    app = create_app("doorward-audit", readiness=db.ping)
    mount_subgraph(
        app,
        build_router(
            runtime,
            gate=GatewayGate.from_stack(stack, nonces=nonces),
            development=stack.env == "development",
        ),
    )
    app.include_router(export_router(runtime))
    grpc_server = GrpcServer(stack.host, stack.audit_grpc_port, auth)
    add_to_server(grpc_server, db, service)

    async def checkpoints() -> None:
        await checkpoint_loop(db, service, settings.audit_checkpoint_interval)

    async def whole_chain_checks() -> None:
        await verification_loop(db, service, settings.audit_full_verify_interval)

    async def close() -> None:
        await nonces.close()
        if guard is not None:
            await guard.close()
        if traces is not None:
            await traces.close()
        await db.dispose()

    parts = ServiceParts(
        app=app,
        host=stack.host,
        http_port=stack.audit_http_port,
        grpc=grpc_server,
        background=[checkpoints, whole_chain_checks],
        close=close,
    )
    return parts, runtime


async def build() -> ServiceParts:
    parts, _ = await build_parts(StackSettings(), AuditSettings())  # type: ignore[call-arg]
    return parts


if __name__ == "__main__":
    run_service("audit", build)
