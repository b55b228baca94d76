"""`python -m services.secrets`: migrations, then FastAPI (value REST, /healthz, /readyz) and gRPC
in one loop, plus the Vault token renewer, the grant sweeper and the audit outbox sender."""

from __future__ import annotations

import logging
from pathlib import Path

from doorward_kit import shred_ledger
from doorward_kit.audit_client import AuditClient, OutboxSender
from doorward_kit.auth import TokenVerifier
from doorward_kit.cors import add_cors, parse_origins
from doorward_kit.db import Database, run_migrations_async
from doorward_kit.errors import DoorwardError
from doorward_kit.grpc import GrpcServer, InternalAuth, ServiceChannel
from doorward_kit.http import create_app
from doorward_kit.logging import register_secret
from doorward_kit.runner import ServiceParts, run_service
from doorward_kit.session_guard import build_token_verifier
from doorward_kit.settings import StackSettings
from services.secrets.api.grpc import add_to_server
from services.secrets.api.rest import build_router
from services.secrets.jobs import WorkOrdersJobs
from services.secrets.models import AuditOutbox
from services.secrets.ratelimit import SharedRateLimiter
from services.secrets.service.secrets import JobSource, Limits, SecretsService
from services.secrets.settings import SecretsSettings
from services.secrets.vault import AppRoleLogin, KubernetesLogin, VaultGateway, VaultLogin

log = logging.getLogger("services.secrets")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def vault_login(settings: SecretsSettings) -> VaultLogin:
    """The secrets service's way into Vault, as DOORWARD_VAULT_AUTH says."""
    if settings.vault_auth == "kubernetes":
        return KubernetesLogin(
            settings.vault_kubernetes_role,
            settings.vault_kubernetes_token_file,
            mount=settings.vault_kubernetes_mount,
        )
    # The settings validator made sure both are set for AppRole.
    assert settings.vault_role_id is not None and settings.vault_secret_id is not None
    return AppRoleLogin(settings.vault_role_id, settings.vault_secret_id)


async def build_parts(
    stack: StackSettings,
    settings: SecretsSettings,
    *,
    verifier: TokenVerifier | None = None,
    jobs: JobSource | None = None,
) -> tuple[ServiceParts, SecretsService]:
    """Everything of one secrets process. Tests pass their own verifier (no identity)."""
    auth = InternalAuth.from_stack(stack, "secrets")
    if auth.token:
        register_secret(auth.token)
    if settings.vault_secret_id is not None:
        register_secret(settings.vault_secret_id.get_secret_value())
    await run_migrations_async(MIGRATIONS, settings.db_url)
    db = Database(settings.db_url, pool_size=stack.db_pool_size, max_overflow=0)
    vault = VaultGateway(
        settings.vault_addr,
        vault_login(settings),
        kv_mount=settings.vault_kv_mount,
        transit_mount=settings.vault_transit_mount,
        timeout=settings.vault_timeout,
    )
    try:
        await vault.login()
        await vault.ensure_seal_key()
    except DoorwardError as error:
        # Not fatal: calls log in lazily and answer UNAVAILABLE until Vault is back.
        log.warning("vault not ready at start", extra={"fields": {"code": error.code.value}})

    guard_close = None
    if verifier is None:
        verifier, guard = build_token_verifier(stack, auth)
        guard_close = guard.close
    audit_channel = ServiceChannel(
        stack.grpc_target("audit"), auth, stack.grpc_deadline, server="audit"
    )
    workorders_channel: ServiceChannel | None = None
    if jobs is None:
        workorders_channel = ServiceChannel(
            stack.grpc_target("workorders"), auth, stack.grpc_deadline, server="workorders"
        )
        jobs = WorkOrdersJobs(workorders_channel)
    service = SecretsService(
        db,
        vault,
        AuditClient(audit_channel, service_name="secrets"),
        jobs,
        base_url=stack.secrets_base_url,
        limits=Limits(
            upload_ttl=settings.secrets_upload_ttl,
            grant_ttl=settings.secrets_grant_ttl,
            break_glass_ttl=settings.secrets_break_glass_ttl,
            recheck_job=settings.secrets_recheck_job,
            max_open_grants=settings.secrets_max_open_grants,
            grant_rate=settings.secrets_grant_rate_limit,
            max_open_uploads=settings.secrets_max_open_uploads,
            upload_rate=settings.secrets_upload_rate_limit,
        ),
        step_ups=verifier,
        shred_ledger=Path(settings.secrets_shred_ledger) if settings.secrets_shred_ledger else None,
    )
    if settings.secrets_shred_ledger:
        # Exists from the first start: `backup restore` refuses a ledger that is not there.
        shred_ledger.ensure(Path(settings.secrets_shred_ledger))

    async def ready() -> bool:
        return await db.ping() and await vault.healthy()

    # Clients reach this port directly: a traceparent they send is a link, not our trace.
    # GET /metrics on a port of its own when DOORWARD_SECRETS_METRICS_PORT says so: never on
    # the door then, where a reverse proxy would relay anyone's scrape from its own address.
    metrics_port = stack.secrets_metrics_port
    app = create_app("doorward-secrets", readiness=ready, edge=True, metrics=metrics_port is None)
    add_cors(
        app,
        parse_origins(settings.secrets_cors_origins, [stack.console_origin]),
        ["PUT", "POST"],
    )
    app.include_router(
        build_router(
            service, verifier, SharedRateLimiter(db, "reveal", settings.secrets_reveal_rate_limit)
        )
    )
    grpc_server = GrpcServer(stack.host, stack.secrets_grpc_port, auth)
    add_to_server(grpc_server, service, verifier)
    sender = OutboxSender(db, AuditOutbox, audit_channel, service_name="secrets")

    # The pseudonym key now if Vault answers, otherwise from a background retry.
    await service.load_pseudonym_key()

    async def sweep() -> None:
        await service.sweep_forever(settings.secrets_sweep_seconds)

    async def close() -> None:
        if guard_close is not None:
            await guard_close()
        await audit_channel.close()
        if workorders_channel is not None:
            await workorders_channel.close()
        vault.close()
        await db.dispose()

    parts = ServiceParts(
        app=app,
        host=stack.host,
        http_port=stack.secrets_http_port,
        metrics_port=metrics_port,
        metrics_allowed_networks=stack.metrics_allowed_networks,
        grpc=grpc_server,
        background=[vault.renew_forever, sweep, sender.run, service.keep_pseudonym_key],
        close=close,
    )
    return parts, service


async def build() -> ServiceParts:
    parts, _ = await build_parts(StackSettings(), SecretsSettings())  # type: ignore[call-arg]
    return parts


if __name__ == "__main__":
    run_service("secrets", build)
