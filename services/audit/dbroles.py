"""Who owns audit's database and who may write it (see services/audit/README.md).

- `doorward_audit_owner` (NOLOGIN) owns the database and every table; migrations run as it
  (`run_owner_migrations`, called by `doorward up` / `doorward provision` with the admin login,
  which SETs ROLE to it).
- `doorward_audit_writer` (NOLOGIN) holds SELECT and INSERT on the trail, UPDATE on the chain
  heads, SELECT on alembic_version: nothing else.
- the service's LOGIN role is a member of the writer only. Having no more rights than the writer,
  it has nothing to gain from RESET ROLE, and being no member of the owner it cannot SET ROLE to
  it, ALTER the tables, disable their triggers, UPDATE, DELETE or TRUNCATE the trail.

At start the service only checks that its database is at the newest migration; it migrates
itself only where its login may act as the owner (SET ROLE) or owns the database (an external
database set up without these roles, with a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from doorward_kit.db import run_migrations

log = logging.getLogger(__name__)

OWNER_ROLE = "doorward_audit_owner"
WRITER_ROLE = "doorward_audit_writer"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def run_owner_migrations(url: str) -> None:
    """Upgrade audit's database to head as the owner. `url`: postgresql+asyncpg:// of a login
    that may SET ROLE doorward_audit_owner (the admin)."""
    run_migrations(MIGRATIONS, url, role=OWNER_ROLE)


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _state(url: str) -> tuple[str | None, bool, bool, bool]:
    """(current revision, may SET ROLE owner, owns the database, may change the trail)."""
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        current = None
        if await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
            current = await conn.fetchval("SELECT version_num FROM alembic_version")
        # The owner role owns this database and the login may act as it.
        as_owner = bool(
            await conn.fetchval(
                "SELECT pg_has_role(current_user, datdba, 'MEMBER') FROM pg_database "
                "WHERE datname = current_database() AND datdba::regrole::text = $1",
                OWNER_ROLE,
            )
        )
        owns_db = bool(
            await conn.fetchval(
                "SELECT pg_has_role(current_user, datdba, 'USAGE') FROM pg_database "
                "WHERE datname = current_database()"
            )
        )
        too_strong = False
        if current is not None:
            too_strong = bool(
                await conn.fetchval(
                    "SELECT rolsuper OR has_table_privilege('audit_events', "
                    "'UPDATE, DELETE, TRUNCATE') FROM pg_roles WHERE rolname = current_user"
                )
            )
        return current, as_owner, owns_db, too_strong
    finally:
        await conn.close()


async def ensure_schema(url: str) -> None:
    """Called by the service at start, with its own login."""
    import asyncio

    current, as_owner, owns_db, _ = await _state(url)
    if current != head_revision():
        if as_owner:
            await asyncio.to_thread(run_migrations, MIGRATIONS, url, role=OWNER_ROLE)
        elif owns_db:
            log.warning(
                "audit migrates as its own login, which then owns the trail: give the tables "
                "to doorward_audit_owner (services/audit/README.md)"
            )
            await asyncio.to_thread(run_migrations, MIGRATIONS, url)
        else:
            raise RuntimeError(
                "audit's database is not at the newest migration and its login may not "
                "migrate it: run `doorward up` or `doorward provision`, which migrate it as "
                f"{OWNER_ROLE}"
            )
    _, _, _, too_strong = await _state(url)
    if too_strong:
        log.warning(
            "audit's database login may change or delete the trail (superuser or owner): "
            "use a login that is only a member of doorward_audit_writer"
        )
