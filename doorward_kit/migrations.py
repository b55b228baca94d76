"""The body of every service's alembic env.py, written once.

A service's migrations/env.py is just:
    from doorward_kit.migrations import run_alembic_env
    from services.x.models import Base
    run_alembic_env(Base.metadata)
"""

from __future__ import annotations

import asyncio
import re

from alembic import context
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# Replicas of a service start (and migrate) at once: one migrates, the others wait for it and
# then find nothing left to do. Advisory locks are per database: one key serves every service.
MIGRATION_LOCK_KEY = 7_302_118_604_411


def _run_sync(connection: Connection, metadata: MetaData) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        # Taken before alembic reads its version table, held until the migrations commit.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _run_online(url: str, metadata: MetaData, role: str | None) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            if role:
                # Objects the migrations create belong to `role` (e.g. audit's NOLOGIN owner),
                # not to the login that connected.
                await connection.exec_driver_sql(f'SET ROLE "{role}"')
                # Ends the transaction SQLAlchemy began (the session keeps the role); else
                # alembic would nest in it and nothing would ever be committed.
                await connection.commit()
            await connection.run_sync(_run_sync, metadata)
    finally:
        await engine.dispose()


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_alembic_env(metadata: MetaData) -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: sqlalchemy.url is not set")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    if _in_running_loop():
        raise RuntimeError("run migrations through doorward_kit.db.run_migrations_async")
    role = context.config.get_main_option("doorward.role")
    if role and not _ROLE.match(role):
        raise RuntimeError("alembic: doorward.role must be a plain lower-case role name")
    asyncio.run(_run_online(url, metadata, role))
