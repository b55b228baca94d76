"""`doorward provision`: prepare an external PostgreSQL and Vault for Doorward, without running it.

For deployments where something else runs the processes (docker-compose.yml, systemd, ...):
creates the four databases, provisions Vault (mounts, policy, AppRole) and writes into one
0700 folder the files the services read: internal-token, audit-signing-key.pem,
vault-role-id, vault-secret-id (each 0600). Idempotent: existing files are kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import hvac

from deploy.embedded import create_database, database_url, provision_vault
from deploy.errors import DeployError
from deploy.supervisor import DATABASES, ed25519_pem, read_or_create_secret


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
    for name in DATABASES.values():
        create_database(admin, name)
        say(f"database {name} ready")

    known_path = out_dir / "vault-secret-id"
    known = known_path.read_text().strip() if known_path.exists() else None
    creds = provision_vault(hvac.Client(url=addr, token=token), secret_id=known)
    for name, value in (("vault-role-id", creds.role_id), ("vault-secret-id", creds.secret_id)):
        path = out_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
    say(f"Vault provisioned; AppRole credentials in {out_dir}")

    read_or_create_secret(out_dir / "internal-token", _token)
    read_or_create_secret(out_dir / "audit-signing-key.pem", ed25519_pem)
    say(f"internal token and audit signing key in {out_dir}")


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(32)
