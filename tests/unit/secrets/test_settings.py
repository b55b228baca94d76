from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.secrets.settings import SecretsSettings

pytestmark = pytest.mark.unit

REQUIRED = {
    "secrets_db_url": "postgresql+asyncpg://u:pw@/db",
    "vault_addr": "http://127.0.0.1:8200",
    "vault_role_id": "role",
    "vault_secret_id": "secret-id-value",
}


def test_secret_id_and_db_url_never_print() -> None:
    settings = SecretsSettings(**REQUIRED)
    assert "secret-id-value" not in repr(settings)
    assert "pw" not in repr(settings)
    assert settings.vault_kv_mount == "doorward-kv"
    assert settings.vault_transit_mount == "doorward-transit"
    assert settings.secrets_upload_ttl == 600


def test_no_ttl_above_what_the_vault_policy_allows() -> None:
    with pytest.raises(ValidationError):
        SecretsSettings(**REQUIRED, secrets_grant_ttl=7200)


def test_vault_credentials_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOORWARD_VAULT_ADDR", "DOORWARD_VAULT_ROLE_ID", "DOORWARD_VAULT_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError):
        SecretsSettings(secrets_db_url="postgresql+asyncpg://x")


def test_approle_without_its_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOORWARD_VAULT_AUTH", "DOORWARD_VAULT_ROLE_ID", "DOORWARD_VAULT_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    base = {k: v for k, v in REQUIRED.items() if k != "vault_secret_id"}
    with pytest.raises(ValidationError, match="DOORWARD_VAULT_SECRET_ID"):
        SecretsSettings(**base)


def test_kubernetes_auth_needs_no_secret_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOORWARD_VAULT_ROLE_ID", "DOORWARD_VAULT_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    settings = SecretsSettings(
        secrets_db_url="postgresql+asyncpg://u:pw@/db",
        vault_addr="https://vault:8200",
        vault_auth="kubernetes",
    )
    assert settings.vault_secret_id is None
    assert settings.vault_kubernetes_role == "doorward-secrets"
    assert str(settings.vault_kubernetes_token_file).endswith("serviceaccount/token")
    with pytest.raises(ValidationError):
        SecretsSettings(**REQUIRED, vault_auth="ldap")
