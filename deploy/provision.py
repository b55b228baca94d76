"""`doorward provision`: prepare an external PostgreSQL and Vault for Doorward, without running it.

For deployments where something else runs the processes (docker-compose.yml, systemd, ...):
creates one login role and one database per service (deploy/pgroles.py; audit migrated as its
owner), provisions Vault (mounts, policy, AppRole) and writes into OUT one 0700 folder per
service holding only that service's files (each 0600), the convention of `doorward up`'s
`credentials/<service>/`:

    OUT/internal-token                 shared by every process (until service certificates)
    OUT/<service>/db-password, db-url  identity, workorders, secrets, audit: its own login
    OUT/secrets/vault-role-id, vault-secret-id
    OUT/audit/audit-signing-key.pem
    OUT/gateway/signing-key.pem (+ .pub.pem)  the gateway's request-signing key
    OUT/<subgraph>/gateway-public-key.pem      identity, workorders, audit: its public half
    OUT/pki-issuer-role-id, pki-issuer-secret-id   for `doorward certs` (the internal CA's issuer)
    OUT/backup/vault-role-id, vault-secret-id       for `doorward backup create` (snapshots only)

Idempotent: existing files are kept (passwords are set again to the kept values).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import hvac

from deploy.embedded import (
    _write_private,
    database_url,
    provision_backup_role,
    provision_vault,
)
from deploy.errors import DeployError
from deploy.pgroles import login_url, provision_service_databases, read_or_create_password
from deploy.pki import all_hosts, provision_pki, stack_of
from deploy.supervisor import DATABASES, ed25519_pem, read_or_create_secret


def _folder(out_dir: Path, svc: str) -> Path:
    path = out_dir / svc
    path.mkdir(exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def provision(out_dir: Path, env: Mapping[str, str], say: Callable[[str], None]) -> None:
    db = env.get("DOORWARD_DATABASE_URL")
    addr = env.get("DOORWARD_VAULT_ADDR")
    token = env.get("DOORWARD_VAULT_TOKEN")
    if not (db and addr and token):
        raise DeployError(
            "set DOORWARD_DATABASE_URL, DOORWARD_VAULT_ADDR and DOORWARD_VAULT_TOKEN "
            "(a token allowed to manage mounts, policies and auth methods)"
        )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out_dir, 0o700)

    from sqlalchemy.engine import make_url

    admin = database_url(db, make_url(db).database or "postgres", driver="postgresql")
    passwords = {
        svc: read_or_create_password(_folder(out_dir, svc) / "db-password") for svc in DATABASES
    }
    logins = provision_service_databases(admin, DATABASES, passwords)
    for svc, sl in logins.items():
        _write_private(_folder(out_dir, svc) / "db-url", login_url(db, sl))
        say(f"database {sl.database} ready, login {sl.login}")

    secrets_dir = _folder(out_dir, "secrets")
    known_path = secrets_dir / "vault-secret-id"
    known = known_path.read_text().strip() if known_path.exists() else None
    creds = provision_vault(hvac.Client(url=addr, token=token), secret_id=known)
    for name, value in (("vault-role-id", creds.role_id), ("vault-secret-id", creds.secret_id)):
        _write_private(secrets_dir / name, value)
    say(f"Vault provisioned; AppRole credentials in {secrets_dir}")
    client = hvac.Client(url=addr, token=token)
    pki = provision_pki(
        client,
        all_hosts(stack_of(env)),
        secret_id=_known(out_dir / "pki-issuer-secret-id"),
    )
    _write_private(out_dir / "pki-issuer-role-id", pki.role_id)
    _write_private(out_dir / "pki-issuer-secret-id", pki.secret_id)
    say(f"internal CA at doorward-pki/; its issuer's AppRole in {out_dir}")

    backup_dir = _folder(out_dir, "backup")
    backup = provision_backup_role(
        hvac.Client(url=addr, token=token), secret_id=_known(backup_dir / "vault-secret-id")
    )
    _write_private(backup_dir / "vault-role-id", backup.role_id)
    _write_private(backup_dir / "vault-secret-id", backup.secret_id)
    say(f"backup AppRole (raft snapshots only) in {backup_dir}")

    read_or_create_secret(out_dir / "internal-token", _token)
    read_or_create_secret(_folder(out_dir, "audit") / "audit-signing-key.pem", ed25519_pem)
    say(f"internal token in {out_dir}, audit signing key in {out_dir / 'audit'}")
    _gateway_signing_keys(out_dir)
    say(f"gateway signing key in {out_dir / 'gateway'}, its public key in each subgraph's folder")


def _gateway_signing_keys(out_dir: Path) -> None:
    """The gateway's Ed25519 pair (subgraphs answer only requests it signed), as `doorward up`
    keeps it: the private key in gateway/ only, a copy of the public key in each subgraph's
    folder (each process mounts only its own folder)."""
    from deploy.supervisor import GRAPHQL_SUBGRAPHS
    from doorward_kit.gateway_signature import create_key_pair

    gateway = _folder(out_dir, "gateway")
    public = gateway / "signing-key.pub.pem"
    create_key_pair(gateway / "signing-key.pem", public)
    for svc in GRAPHQL_SUBGRAPHS:
        _write_private(_folder(out_dir, svc) / "gateway-public-key.pem", public.read_text())


def _known(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(32)
