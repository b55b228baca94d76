"""The body of every service's alembic env.py, written once.

A service's migrations/env.py is just:
    from doorward_kit.migrations import run_alembic_env
    from services.x.models import Base
    run_alembic_env(Base.metadata)
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def _run_sync(connection: Connection, metadata: MetaData) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
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
    asyncio.run(_run_online(url, metadata))
