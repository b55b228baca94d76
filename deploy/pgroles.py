"""One PostgreSQL login role per service, each owning only its own database.

What `doorward up` and `doorward provision` set up with the server's admin login (a superuser,
or a role with CREATEROLE and CREATEDB that may also adopt existing objects):

- identity, workorders, secrets: LOGIN role `doorward_<svc>` (random password, stored as a
  SCRAM verifier) owns database `doorward_<svc>`, its `public` schema and every object in it;
  the service migrates its own schema at start.
- audit: database `doorward_audit` and every table in it belong to the NOLOGIN role
  `doorward_audit_owner`; the LOGIN role `doorward_audit` only inherits
  `doorward_audit_writer` (SELECT and INSERT on the trail, UPDATE on the chain heads) and is no
  member of the owner, so it can neither SET ROLE to it nor ALTER, DISABLE TRIGGER, UPDATE,
  DELETE or TRUNCATE the trail. Audit's migrations run here, as the owner (SET ROLE from the
  admin login), before the service starts (services/audit/README.md).
- CONNECT (and TEMPORARY) is revoked from PUBLIC on each of these databases, and granted only
  to the service's login; on the embedded server also on `postgres` and `template1`.

Idempotent: an existing role gets the given password and loses any attribute beyond LOGIN; a
database made by an older version (owned by the admin) is handed over with its objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.embedded import _in_thread, database_url, scram_verifier
from deploy.errors import DeployError
from services.audit.dbroles import OWNER_ROLE, WRITER_ROLE, run_owner_migrations

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class ServiceLogin:
    """One service's database and the login it uses; `owner` differs only for audit."""

    service: str
    database: str
    login: str
    owner: str
    password: str = field(repr=False)


def service_logins(services: Iterable[str], passwords: Mapping[str, str]) -> list[ServiceLogin]:
    logins = []
    for svc in services:
        name = f"doorward_{svc}"
        owner = OWNER_ROLE if svc == "audit" else name
        logins.append(ServiceLogin(svc, name, name, owner, passwords[svc]))
    return logins


def new_password() -> str:
    """URL-safe (hex), so it goes into a connection URL unencoded."""
    return secrets.token_hex(24)


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case PostgreSQL name")
    return f'"{name}"'


def _role_sql(name: str, *, password: str | None) -> tuple[str, str]:
    """(CREATE, ALTER) for a role with nothing but LOGIN (when it has a password) or NOLOGIN."""
    attrs = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
    if password is None:
        attrs = "NOLOGIN " + attrs + " PASSWORD NULL"
    else:
        # A SCRAM verifier, never the clear password: nothing to leak into the server's logs.
        attrs = f"LOGIN {attrs} PASSWORD '{scram_verifier(password)}'"
    return f"CREATE ROLE {_ident(name)} {attrs}", f"ALTER ROLE {_ident(name)} {attrs}"


# Hands every object of schema public to the owner (databases made by older versions were
# filled by the admin login). Sequences owned by a column follow their table.
_ADOPT = """
DO $$
DECLARE
    r record;
BEGIN
    IF (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public')
        NOT IN ('pg_database_owner', {owner_lit}) THEN
        ALTER SCHEMA public OWNER TO {owner};
    END IF;
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    FOR r IN
        SELECT c.oid::regclass AS obj, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND c.relowner <> {owner_lit}::regrole
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')
                AND d.refclassid = 'pg_class'::regclass))
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('ALTER SEQUENCE %s OWNER TO {owner}', r.obj);
        ELSIF r.relkind = 'v' THEN
            EXECUTE format('ALTER VIEW %s OWNER TO {owner}', r.obj);
        ELSIF r.relkind = 'm' THEN
            EXECUTE format('ALTER MATERIALIZED VIEW %s OWNER TO {owner}', r.obj);
        ELSIF r.relkind = 'f' THEN
            EXECUTE format('ALTER FOREIGN TABLE %s OWNER TO {owner}', r.obj);
        ELSE
            EXECUTE format('ALTER TABLE %s OWNER TO {owner}', r.obj);
        END IF;
    END LOOP;
    FOR r IN
        SELECT t.oid::regtype AS obj FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm')
          AND t.typowner <> {owner_lit}::regrole
    LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO {owner}', r.obj);
    END LOOP;
    FOR r IN
        SELECT p.oid::regprocedure AS obj FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proowner <> {owner_lit}::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO {owner}', r.obj);
    END LOOP;
END
$$
"""


async def _setup_cluster(
    admin_url: str, logins: list[ServiceLogin], lock_down_cluster: bool
) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            # Roles are cluster-wide: one creator at a time.
            await conn.execute("SELECT pg_advisory_xact_lock(7283501)")
            existing = {r["rolname"] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
            roles: dict[str, str | None] = {}
            for sl in logins:
                roles[sl.login] = sl.password
                if sl.owner != sl.login:
                    roles[sl.owner] = None
            if any(sl.service == "audit" for sl in logins):
                roles[WRITER_ROLE] = None
            for name, password in roles.items():
                create, alter = _role_sql(name, password=password)
                await conn.execute(alter if name in existing else create)
            for sl in logins:
                if sl.service == "audit":
                    # Privileges inherited from the writer; never a member of the owner (no
                    # SET ROLE to it), whatever an older version granted.
                    await conn.execute(f"GRANT {_ident(WRITER_ROLE)} TO {_ident(sl.login)}")
                    await conn.execute(f"REVOKE {_ident(sl.owner)} FROM {_ident(sl.login)} CASCADE")
        dbs = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        for sl in logins:
            db = _ident(sl.database)
            if sl.database not in dbs:
                # CREATE DATABASE cannot run in a transaction; a concurrent creator may win.
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f"CREATE DATABASE {db} OWNER {_ident(sl.owner)}")
            await conn.execute(f"ALTER DATABASE {db} OWNER TO {_ident(sl.owner)}")
            await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
            await conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {_ident(sl.login)}")
        if lock_down_cluster:
            for db in ("postgres", "template1"):
                await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC")
    finally:
        await conn.close()


async def _adopt(admin_url: str, sl: ServiceLogin) -> None:
    import asyncpg

    conn = await asyncpg.connect(database_url(admin_url, sl.database, driver="postgresql"))
    try:
        await conn.execute(_ADOPT.format(owner=_ident(sl.owner), owner_lit=f"'{sl.owner}'"))
    finally:
        await conn.close()


def provision_service_databases(
    admin_url: str,
    services: Iterable[str],
    passwords: Mapping[str, str],
    *,
    lock_down_cluster: bool = False,
) -> dict[str, ServiceLogin]:
    """Roles, databases, ownership and grants as described above; then audit's migrations as
    its owner. `admin_url` is a plain postgresql:// URL of the admin login. Returns the logins
    by service."""
    logins = service_logins(services, passwords)
    provision_logins(admin_url, logins, lock_down_cluster=lock_down_cluster)
    return {sl.service: sl for sl in logins}


def provision_logins(
    admin_url: str, logins: list[ServiceLogin], *, lock_down_cluster: bool = False
) -> None:
    """provision_service_databases for explicit names (tests use their own databases)."""
    import asyncpg

    try:
        _in_thread(lambda: _setup_cluster(admin_url, logins, lock_down_cluster))
        for sl in logins:
            _in_thread(lambda sl=sl: _adopt(admin_url, sl))  # type: ignore[misc]
        for sl in logins:
            if sl.service == "audit":
                url = database_url(admin_url, sl.database)
                # Alembic runs its own event loop: off any loop the caller may be running.
                _in_thread(lambda url=url: asyncio.to_thread(run_owner_migrations, url))  # type: ignore[misc]
    except OSError as exc:
        raise DeployError(
            f"cannot reach PostgreSQL to set up the service roles ({type(exc).__name__})"
        ) from exc
    except asyncpg.InsufficientPrivilegeError as exc:
        raise DeployError(
            "the PostgreSQL admin login may not create the service roles and databases: "
            "it needs CREATEROLE and CREATEDB (or superuser)"
        ) from exc


def login_url(server_url: str, sl: ServiceLogin) -> str:
    """postgresql+asyncpg:// URL of `sl`'s database on the server of `server_url` (any
    postgres URL form, e.g. the admin's), with `sl`'s login and password instead."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(server_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(sl.login, safe='')}:{quote(sl.password, safe='')}@{host}"
    return urlunsplit(("postgresql+asyncpg", netloc, "/" + sl.database, parts.query, ""))


def read_or_create_password(path: Path) -> str:
    """A service's database password, kept 0600 in its own credentials folder."""
    from deploy.embedded import _write_private

    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(path, new_password())
    return path.read_text().strip()
