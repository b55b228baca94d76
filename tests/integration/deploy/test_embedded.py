"""The embedded servers really work: SQLAlchemy over the socket URL, AppRole against OpenBao."""

from __future__ import annotations

import stat
from pathlib import Path

import hvac
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from deploy.embedded import (
    EmbeddedOpenBao,
    EmbeddedPostgres,
    free_port_pair,
    pid_alive,
    provision_vault,
)
from deploy.errors import DeployError

pytestmark = pytest.mark.integration


async def test_postgres_url_works_with_sqlalchemy_asyncpg(postgres) -> None:
    url = postgres.create_database("deploy_embedded_check")
    assert postgres.create_database("deploy_embedded_check") == url  # idempotent
    assert url.startswith("postgresql+asyncpg://")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT current_database()"))).scalar() == (
                "deploy_embedded_check"
            )
    finally:
        await engine.dispose()
    assert pid_alive(postgres.server.pid)


def test_openbao_approle_gets_the_doorward_policy(openbao) -> None:
    client = hvac.Client(url=openbao.addr)
    client.auth.approle.login(role_id=openbao.role_id, secret_id=openbao.secret_id)
    me = client.auth.token.lookup_self()["data"]
    assert "doorward-secrets" in me["policies"] and me["renewable"]
    # The policy (owned by the secrets service) allows wrapped KV writes under orgs/ ...
    path = "/v1/doorward-kv/data/orgs/o1/secrets/check"
    wrapped = client.adapter.post(path, json={"data": {"value": "1234"}}, wrap_ttl="60s")
    assert wrapped["wrap_info"]["token"]
    client.secrets.transit.create_key("cust-check", mount_point="doorward-transit")
    # ... and nothing under sys/ but wrapping.
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.list_mounted_secrets_engines()
    # Provisioning again changes nothing and keeps a valid secret_id.
    again = provision_vault(openbao.client(), secret_id=openbao.secret_id)
    assert again.secret_id == openbao.secret_id
    assert again.role_id == openbao.role_id


def test_persistent_openbao_survives_a_restart(tmp_path: Path) -> None:
    # Persistent mode keeps raft data, the audit log and the 0600 key file under the data folder.
    data = tmp_path / "bao"
    port = free_port_pair()
    bao = EmbeddedOpenBao(data, port)
    try:
        bao.start()
        bao.client().sys.enable_secrets_engine("kv", path="p", options={"version": "2"})
        bao.client().secrets.kv.v2.create_or_update_secret("a", {"v": "x"}, mount_point="p")
        assert stat.S_IMODE(bao.init_file.stat().st_mode) == 0o600
        bao.stop()
        assert not pid_alive(bao.pid)
        bao = EmbeddedOpenBao(data, port)
        bao.start()  # sealed after restart: start() unseals again
        read = bao.client().secrets.kv.v2.read_secret_version(
            "a", mount_point="p", raise_on_deleted_version=True
        )
        assert read["data"]["data"] == {"v": "x"}
        assert bao.audit_log_path.stat().st_size > 0
    finally:
        bao.stop()


def test_corrupt_postgres_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "junk").write_text("x")
    with pytest.raises(DeployError, match="corrupt"):
        EmbeddedPostgres(tmp_path / "pg").start()


def test_provision_writes_private_credential_files(
    private_postgres, openbao, tmp_path: Path
) -> None:
    from deploy.provision import provision

    env = {
        "DOORWARD_DATABASE_URL": private_postgres.admin_url(),
        "DOORWARD_VAULT_ADDR": openbao.addr,
        "DOORWARD_VAULT_TOKEN": openbao.root_token,
    }
    said: list[str] = []
    out = tmp_path / "creds"
    provision(out, env, said.append)
    # One 0700 folder per service with only its own files (0600); the shared internal token.
    files = {str(p.relative_to(out)): p for p in out.rglob("*") if p.is_file()}
    assert set(files) == {
        "internal-token",
        "identity/db-password", "identity/db-url",
        "workorders/db-password", "workorders/db-url",
        "secrets/db-password", "secrets/db-url", "secrets/vault-role-id", "secrets/vault-secret-id",
        "audit/db-password", "audit/db-url", "audit/audit-signing-key.pem",
        "traces/db-password", "traces/db-url",
        # The gateway signs subgraph requests; each subgraph holds the public half.
        "gateway/signing-key.pem", "gateway/signing-key.pub.pem",
        "identity/gateway-public-key.pem", "workorders/gateway-public-key.pem",
        "audit/gateway-public-key.pem",
        # What issues the service certificates (`doorward certs`) logs in with.
        "pki-issuer-role-id", "pki-issuer-secret-id",
        # `doorward backup create`'s snapshot-only AppRole.
        "backup/vault-role-id", "backup/vault-secret-id",
    }  # fmt: skip
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in out.iterdir() if p.is_dir())
    assert "doorward_workorders:" in files["workorders/db-url"].read_text()
    secret_id = files["secrets/vault-secret-id"].read_text()
    provision(out, env, said.append)  # idempotent: same secret_id kept
    assert files["secrets/vault-secret-id"].read_text() == secret_id
    assert not any(secret_id in line or openbao.root_token in line for line in said)
    assert not any(files["audit/db-password"].read_text() in line for line in said)
    issuer_id = files["pki-issuer-secret-id"].read_text()
    assert not any(issuer_id in line for line in said)
    backup_id = files["backup/vault-secret-id"].read_text()
    assert not any(backup_id in line for line in said)
    provision(out, env, said.append)  # the backup AppRole's secret id is kept too
    assert files["backup/vault-secret-id"].read_text() == backup_id


def test_certs_issues_every_process_its_certificate_from_the_provisioned_ca(
    private_postgres, openbao, tmp_path: Path
) -> None:
    """`doorward certs --once` after `doorward provision`: what a compose stack runs."""
    from deploy.pki import run_certs
    from deploy.provision import provision
    from doorward_kit.tls import SERVICES, CredentialFolder

    env = {
        "DOORWARD_DATABASE_URL": private_postgres.admin_url(),
        "DOORWARD_VAULT_ADDR": openbao.addr,
        "DOORWARD_VAULT_TOKEN": openbao.root_token,
        # Each service at its own address: its certificate carries that name, no other's does.
        "DOORWARD_AUDIT_GRPC_ADDRESS": "audit.doorward.svc:5003",
    }
    provision(tmp_path / "creds", env, lambda _: None)
    certs_env = {
        "DOORWARD_VAULT_ADDR": openbao.addr,
        "DOORWARD_TLS_CERT_TTL": "60",
        "DOORWARD_AUDIT_GRPC_ADDRESS": "audit.doorward.svc:5003",
    }
    run_certs(tmp_path / "tls", tmp_path / "creds", certs_env, lambda _: None, once=True)
    for svc in SERVICES:
        folder = CredentialFolder(tmp_path / "tls" / svc)
        assert stat.S_IMODE(folder.identity_file.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in folder.load().key_pem
    assert _dns_names(tmp_path / "tls" / "audit") >= {"audit.doorward.svc"}
    assert "audit.doorward.svc" not in _dns_names(tmp_path / "tls" / "identity")


def _dns_names(folder: Path) -> set[str]:
    from cryptography import x509

    from doorward_kit.tls import CredentialFolder

    pem = CredentialFolder(folder).identity_file.read_bytes()
    cert = x509.load_pem_x509_certificates(pem)[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))
