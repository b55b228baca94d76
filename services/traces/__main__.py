"""`python -m services.traces`: the embedded trace store (migrations, OTLP receiver, the read API
for audit over mutual-TLS gRPC, retention).

It exports no spans of its own: a store that traced its own ingestion would feed itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from pathlib import Path

from doorward_kit.auth import TokenVerifier
from doorward_kit.db import Database, run_migrations_async
from doorward_kit.gc_tuning import settle_heap
from doorward_kit.grpc import GrpcServer, InternalAuth
from doorward_kit.http import create_app
from doorward_kit.logging import register_secret, setup_logging
from doorward_kit.runner import ServiceParts, run_loop, serving
from doorward_kit.session_guard import build_token_verifier
from doorward_kit.settings import StackSettings
from services.traces.api.grpc import add_to_server
from services.traces.api.http import otlp_router
from services.traces.service import TraceStore
from services.traces.settings import TracesSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The OTLP exporters send every 5 s (spans) and 15 s (metrics): with uvicorn's 5 s idle limit
# most exports paid a new mutual-TLS handshake on both ends. Only Doorward processes reach the
# receiver (NetworkPolicy; a client certificate where it runs TLS), so idle ones may stay.
RECEIVER_KEEP_ALIVE_SECONDS = 65
log = logging.getLogger(__name__)


async def prune_loop(db: Database, store: TraceStore, period: float) -> None:
    """Delete what is past retention, in short batches, every `period` seconds. Safe with
    several replicas: a transaction-scoped advisory lock lets one of them work at a time."""
    while True:
        with contextlib.suppress(Exception):
            total = 0
            while True:
                async with db.unit_of_work() as session:
                    if not await _try_lock(session):
                        break
                    await store.load_org_retention(session)
                    deleted = await store.prune(session) + await store.prune_orgs(session)
                total += deleted
                if deleted == 0:
                    break
            if total:
                log.info("trace store pruned", extra={"fields": {"rows": total}})
        await asyncio.sleep(period)


async def _try_lock(session: object) -> bool:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(session, AsyncSession)
    # 0x7472616365 = "trace": one key for the retention job of every replica.
    result = await session.execute(text("SELECT pg_try_advisory_xact_lock(498469676901)"))
    return bool(result.scalar())


async def build_parts(
    stack: StackSettings,
    settings: TracesSettings,
    *,
    verifier: TokenVerifier | None = None,
) -> tuple[ServiceParts, Database, TraceStore]:
    """Everything but the serving; tests pass their own verifier (no identity running)."""
    await run_migrations_async(MIGRATIONS, settings.db_url)
    db = Database(settings.db_url, pool_size=stack.db_pool_size, max_overflow=0)
    store = TraceStore(retention=timedelta(days=settings.traces_retention_days))
    async with db.unit_of_work() as session:
        await store.load_org_retention(session)  # reads answer by them from the start
    app = create_app("doorward-traces", readiness=db.ping)
    auth = InternalAuth.from_stack(stack, "traces")
    receiver_tls = auth.tls_dir if settings.traces_receiver_tls else None
    app.include_router(
        otlp_router(db, store, settings.traces_max_body_bytes, tls=receiver_tls is not None)
    )

    # The read API verifies the token of the auditor each call acts for, as every service does.
    if auth.token:
        register_secret(auth.token)
    guard = None
    if verifier is None:
        verifier, guard = build_token_verifier(stack, auth)
    grpc_server = GrpcServer(stack.host, stack.traces_grpc_port, auth)
    add_to_server(grpc_server, db, store, verifier)

    async def retention() -> None:
        await prune_loop(db, store, settings.traces_prune_seconds)

    async def close() -> None:
        if guard is not None:
            await guard.close()
        await db.dispose()

    parts = ServiceParts(
        app=app,
        host=stack.host,
        http_port=stack.traces_http_port,
        http_tls=receiver_tls,
        grpc=grpc_server,
        background=[retention],
        close=close,
        keep_alive_seconds=RECEIVER_KEEP_ALIVE_SECONDS,
    )
    return parts, db, store


async def _main() -> None:
    stack = StackSettings()
    parts, _, _ = await build_parts(stack, TracesSettings())  # type: ignore[call-arg]
    settle_heap()
    async with serving(parts, "traces") as http:
        log.info(
            "traces serving",
            extra={"fields": {"http_port": parts.http_port, "grpc_port": stack.traces_grpc_port}},
        )
        await http.finished


if __name__ == "__main__":
    setup_logging("traces")
    run_loop(_main())
