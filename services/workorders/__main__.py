"""`python -m services.workorders`: migrations, then FastAPI (GraphQL subgraph) and gRPC
(GetAccessContext) in one loop, with the audit and grant-revocation outbox senders."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from doorward_kit.audit_client import OutboxSender
from doorward_kit.auth import TokenVerifier
from doorward_kit.db import Database, run_migrations_async
from doorward_kit.graphql import GatewayGate
from doorward_kit.grpc import GrpcServer, InternalAuth, ServiceChannel
from doorward_kit.http import create_app
from doorward_kit.logging import register_secret
from doorward_kit.nonce_ledger import PostgresNonceLedger
from doorward_kit.pseudonym import keep_pseudonym_key
from doorward_kit.runner import ServiceParts, run_service
from doorward_kit.session_guard import build_token_verifier
from doorward_kit.settings import StackSettings
from doorward_kit.subgraph_edge import mount_subgraph
from services.workorders.api.graphql import build_router
from services.workorders.api.grpc import add_to_server
from services.workorders.clients import (
    GrpcAuditPruner,
    GrpcIdentity,
    GrpcSecrets,
    GrpcTraceStore,
)
from services.workorders.crypto import ContactCrypto, DataKeyCache
from services.workorders.models import AuditOutbox
from services.workorders.outbox import RevocationSender
from services.workorders.purge import Purge
from services.workorders.retention import TraceRetentionBy
from services.workorders.runtime import Runtime
from services.workorders.service import WorkOrdersService
from services.workorders.settings import WorkOrdersSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def build_parts(
    stack: StackSettings,
    settings: WorkOrdersSettings,
    *,
    verifier: TokenVerifier | None = None,
) -> tuple[ServiceParts, Runtime]:
    """Everything the process runs; tests pass their own verifier (no identity needed)."""
    auth = InternalAuth.from_stack(stack, "workorders")
    if auth.token:
        register_secret(auth.token)
    await run_migrations_async(MIGRATIONS, settings.db_url)
    db = Database(settings.db_url, pool_size=stack.db_pool_size, max_overflow=0)
    # A signed request's nonce is good once across every replica (its own database).
    nonces = PostgresNonceLedger(settings.db_url)

    def channel(service: str) -> ServiceChannel:
        return ServiceChannel(stack.grpc_target(service), auth, stack.grpc_deadline, server=service)

    secrets_channel, identity_channel, audit_channel = (
        channel("secrets"),
        channel("identity"),
        channel("audit"),
    )
    guard = None
    if verifier is None:
        verifier, guard = build_token_verifier(stack, auth)
    secrets = GrpcSecrets(secrets_channel)
    crypto = ContactCrypto(
        secrets.create_data_key,
        secrets.decrypt_data_key,
        DataKeyCache(
            settings.workorders_data_key_cache_seconds, settings.workorders_data_key_cache_size
        ),
        upgrade_v1=settings.workorders_contact_v1_upgrade,
    )
    service = WorkOrdersService(secrets, GrpcIdentity(identity_channel), crypto)
    # The embedded trace store takes each organisation's traceDays from the purge; with an
    # external collector there is nobody to tell (the operator's backend decides).
    traces_channel = channel("traces") if settings.workorders_trace_store else None
    purge = Purge(
        db,
        batch=settings.workorders_purge_batch,
        interval=timedelta(seconds=settings.workorders_purge_interval_seconds),
        forget_key=crypto.cache.forget,
        prune_audit=GrpcAuditPruner(audit_channel).prune,
        prune_grants=secrets.prune_grants,
        retire_site_secrets=secrets.retire_site_secrets,
        shred_customers=secrets.shred_retained_customers,
        set_trace_retention=(
            GrpcTraceStore(traces_channel).set_org_retention if traces_channel else None
        ),
    )
    runtime = Runtime(
        db=db,
        service=service,
        verifier=verifier,
        purge=purge,
        trace_retention_by=(
            TraceRetentionBy.TRACE_STORE
            if settings.workorders_trace_store
            else TraceRetentionBy.EXTERNAL_BACKEND
        ),
    )

    app = create_app("doorward-workorders", readiness=db.ping)
    mount_subgraph(
        app,
        build_router(
            runtime,
            gate=GatewayGate.from_stack(stack, nonces=nonces),
            development=stack.env == "development",
        ),
    )
    grpc_server = GrpcServer(stack.host, stack.workorders_grpc_port, auth)
    add_to_server(grpc_server, db, service)
    audit_sender = OutboxSender(db, AuditOutbox, audit_channel, service_name="workorders")
    revoker = RevocationSender(db, secrets, poll_seconds=settings.workorders_outbox_poll_seconds)
    runtime.wake_revoker = revoker.kick

    async def pseudonym_key() -> None:
        await keep_pseudonym_key(secrets_channel)

    async def close() -> None:
        await nonces.close()
        if guard is not None:
            await guard.close()
        for ch in (secrets_channel, identity_channel, audit_channel):
            await ch.close()
        if traces_channel is not None:
            await traces_channel.close()
        await db.dispose()

    parts = ServiceParts(
        app=app,
        host=stack.host,
        http_port=stack.workorders_http_port,
        grpc=grpc_server,
        background=[
            audit_sender.run,
            revoker.run,
            lambda: purge.run_forever(min(60.0, settings.workorders_purge_interval_seconds)),
            pseudonym_key,
        ],
        close=close,
    )
    return parts, runtime


async def build() -> ServiceParts:
    parts, _ = await build_parts(StackSettings(), WorkOrdersSettings())  # type: ignore[call-arg]
    return parts


if __name__ == "__main__":
    run_service("workorders", build)
