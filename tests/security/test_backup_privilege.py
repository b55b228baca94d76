"""The backup AppRole (deploy/embedded.py provision_backup_role) may take a raft snapshot and
nothing else: no secret value, no transit key, no policy, no token of anybody else."""

from __future__ import annotations

from typing import Any

import hvac
import pytest

from deploy.embedded import BACKUP_ROLE, provision_backup_role, provision_vault

pytestmark = pytest.mark.integration


def test_the_backup_token_can_snapshot_and_nothing_else(openbao: Any) -> None:
    root = openbao.client()
    provision_vault(root)
    creds = provision_backup_role(root)
    # Idempotent: the same secret id is kept while it is valid.
    assert provision_backup_role(root, secret_id=creds.secret_id).secret_id == creds.secret_id
    login = hvac.Client(url=openbao.addr).auth.approle.login(creds.role_id, creds.secret_id)
    token = login["auth"]["client_token"]
    assert login["auth"]["policies"] == [BACKUP_ROLE]  # no default policy
    assert login["auth"]["lease_duration"] <= 3600
    client = hvac.Client(url=openbao.addr, token=token)

    def capabilities(path: str) -> list[str]:
        # Asked by the root token: the backup token may not even ask (no default policy).
        answer = root.adapter.post("/v1/sys/capabilities", json={"token": token, "paths": [path]})
        return sorted(answer["data"][path])

    # The honest use works ...
    assert capabilities("sys/storage/raft/snapshot") == ["read"]
    # ... the rest is denied.
    for path in (
        "doorward-kv/data/orgs/o/secrets/s",
        "doorward-kv/metadata/orgs/o/secrets/s",
        "doorward-transit/keys/cust-x",
        "doorward-transit/decrypt/cust-x",
        "doorward-transit/datakey/plaintext/cust-x",
        "sys/storage/raft/snapshot-force",
        "sys/storage/raft/snapshot-auto/config/x",
        "sys/policies/acl/doorward-backup",
        "auth/approle/role/doorward-secrets/secret-id",
        "auth/token/create",
        "sys/wrapping/unwrap",
        "doorward-pki/issue/identity",
    ):
        assert capabilities(path) == ["deny"], path
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(
            "orgs/o/secrets/s", mount_point="doorward-kv", raise_on_deleted_version=True
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.list_mounted_secrets_engines()
    client.auth.token.revoke_self()
