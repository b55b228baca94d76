"""`python -m services.identity`: migrations, then FastAPI (GraphQL + JWKS) and gRPC in one loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from doorward_kit.audit_client import OutboxSender
from doorward_kit.db import Database, run_migrations_async
from doorward_kit.graphql import GatewayGate
from doorward_kit.grpc import GrpcServer, InternalAuth, ServiceChannel
from doorward_kit.http import create_app
from doorward_kit.logging import register_secret
from doorward_kit.nonce_ledger import PostgresNonceLedger
from doorward_kit.pseudonym import keep_pseudonym_key
from doorward_kit.runner import ServiceParts, run_service
from doorward_kit.settings import StackSettings
from doorward_kit.subgraph_edge import mount_subgraph
from services.identity.api.graphql import build_router
from services.identity.api.grpc import add_to_server
from services.identity.api.http import jwks_router
from services.identity.models import AuditOutbox
from services.identity.outbox import GrantRevoker
from services.identity.runtime import Identity, build_identity, build_keys
from services.identity.session_bus import SessionBus, asyncpg_dsn
from services.identity.settings import IdentitySettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def build_parts(
    stack: StackSettings, settings: IdentitySettings
) -> tuple[ServiceParts, Identity]:
    auth = InternalAuth.from_stack(stack, "identity")
    if auth.token:
        register_secret(auth.token)
    await run_migrations_async(MIGRATIONS, settings.db_url)
    db = Database(settings.db_url, pool_size=stack.db_pool_size, max_overflow=0)
    # A signed request's nonce is good once across every replica (its own database).
    nonces = PostgresNonceLedger(settings.db_url)
    keys = await asyncio.to_thread(build_keys, settings)
    secrets_channel = ServiceChannel(
        stack.grpc_target("secrets"), auth, stack.grpc_deadline, server="secrets"
    )
    audit_channel = ServiceChannel(
        stack.grpc_target("audit"), auth, stack.grpc_deadline, server="audit"
    )
    revoker = GrantRevoker(db, secrets_channel, poll_seconds=settings.identity_outbox_poll_seconds)
    identity = build_identity(settings, db, keys=keys, revoker=revoker)
    identity.bus = SessionBus(
        asyncpg_dsn(settings.db_url), identity.hub, ack_seconds=settings.identity_watch_ack_timeout
    )

    app = create_app("doorward-identity", readiness=db.ping)
    app.include_router(jwks_router(keys))
    mount_subgraph(
        app,
        build_router(
            identity,
            gate=GatewayGate.from_stack(stack, nonces=nonces),
            development=stack.env == "development",
        ),
    )
    grpc_server = GrpcServer(stack.host, stack.identity_grpc_port, auth)
    add_to_server(grpc_server, identity)
    sender = OutboxSender(db, AuditOutbox, audit_channel, service_name="identity")

    async def pseudonym_key() -> None:
        await keep_pseudonym_key(secrets_channel)

    async def close() -> None:
        await nonces.close()
        identity.hub.close_all()
        await secrets_channel.close()
        await audit_channel.close()
        await db.dispose()

    parts = ServiceParts(
        app=app,
        host=stack.host,
        http_port=stack.identity_http_port,
        grpc=grpc_server,
        background=[
            identity.bus.run,
            revoker.run,
            identity.maintain_keys,
            sender.run,
            pseudonym_key,
        ],
        close=close,
    )
    return parts, identity


async def build() -> ServiceParts:
    parts, _ = await build_parts(StackSettings(), IdentitySettings())  # type: ignore[call-arg]
    return parts


if __name__ == "__main__":
    run_service("identity", build)
