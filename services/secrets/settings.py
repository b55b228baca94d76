"""The secrets service's settings (environment, prefix DOORWARD_). Nothing secret has a default.

DOORWARD_SECRETS_DB_URL             postgresql+asyncpg://... (required)
DOORWARD_VAULT_ADDR                 e.g. http://127.0.0.1:8200 (required)
DOORWARD_VAULT_AUTH                 approle (default) or kubernetes
DOORWARD_VAULT_ROLE_ID / _SECRET_ID AppRole credentials (required with approle; the secret id
                                    is a SecretStr)
DOORWARD_VAULT_KUBERNETES_ROLE      Vault role of the Kubernetes auth method (doorward-secrets)
DOORWARD_VAULT_KUBERNETES_MOUNT     where that method is mounted (kubernetes)
DOORWARD_VAULT_KUBERNETES_TOKEN_FILE the pod's service-account token (the projected default)
DOORWARD_VAULT_KV_MOUNT             KV v2 mount of site secrets (doorward-kv)
DOORWARD_VAULT_TRANSIT_MOUNT        transit mount for data keys and token sealing (doorward-transit)
DOORWARD_SECRETS_UPLOAD_TTL         seconds an upload token lives (600)
DOORWARD_SECRETS_GRANT_TTL          seconds a reveal grant lives at most (900; also capped by the
                                    job's window and by the Vault policy's max_wrapping_ttl, 1h)
DOORWARD_SECRETS_BREAK_GLASS_TTL    seconds a break-glass grant lives (300)
DOORWARD_SECRETS_REVEAL_RATE_LIMIT  requests per user per minute on the value routes (30)
DOORWARD_SECRETS_RECHECK_JOB        re-check the job with workorders (GetAccessContext) (true)
DOORWARD_SECRETS_SWEEP_SECONDS      how often the sweeper cleans Vault-side tokens (30)
DOORWARD_SECRETS_MAX_OPEN_GRANTS    grants one user may hold unused at once (10)
DOORWARD_SECRETS_GRANT_RATE_LIMIT   grant requests per user per minute (20)
DOORWARD_SECRETS_MAX_OPEN_UPLOADS   upload slots one user may hold unused at once (20)
DOORWARD_SECRETS_UPLOAD_RATE_LIMIT  upload-slot requests per user per minute (30)
DOORWARD_SECRETS_CORS_ORIGINS       comma-separated browser origins allowed to call the value
                                    routes (default: the console's, DOORWARD_GATEWAY_PUBLIC_URL)
DOORWARD_SECRETS_SHRED_LEDGER       file (or existing folder: one file per host) of the shred
                                    ledger (doorward_kit/shred_ledger.py);
                                    unset: erasures are not recorded for replay after a restore
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The Vault policy (deploy/vault/doorward-secrets.hcl) refuses wrapping TTLs above this.
VAULT_MAX_WRAPPING_TTL = 3600


class SecretsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOORWARD_", extra="forbid", frozen=True)

    secrets_db_url: SecretStr
    vault_addr: str
    # How the service logs in to Vault: AppRole (role id + secret id handed to it) or, on
    # Kubernetes, the Kubernetes auth method with the pod's service-account token.
    vault_auth: Literal["approle", "kubernetes"] = "approle"
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_kubernetes_role: str = "doorward-secrets"
    vault_kubernetes_mount: str = "kubernetes"
    vault_kubernetes_token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    vault_kv_mount: str = "doorward-kv"
    vault_transit_mount: str = "doorward-transit"
    vault_timeout: float = Field(default=5.0, gt=0)
    secrets_upload_ttl: int = Field(default=600, ge=5, le=VAULT_MAX_WRAPPING_TTL)
    secrets_grant_ttl: int = Field(default=900, ge=5, le=VAULT_MAX_WRAPPING_TTL)
    secrets_break_glass_ttl: int = Field(default=300, ge=5, le=VAULT_MAX_WRAPPING_TTL)
    secrets_reveal_rate_limit: int = Field(default=30, ge=1)
    secrets_recheck_job: bool = True
    secrets_sweep_seconds: float = Field(default=30.0, gt=0)
    # Per-user limits: a stolen token (or a bug upstream) cannot stockpile grants or slots.
    secrets_max_open_grants: int = Field(default=10, ge=1)
    secrets_grant_rate_limit: int = Field(default=20, ge=1)
    secrets_max_open_uploads: int = Field(default=20, ge=1)
    secrets_upload_rate_limit: int = Field(default=30, ge=1)
    # Browsers (the console) call the value routes cross-origin; unset: the console's origin.
    secrets_cors_origins: str | None = None
    # Every customer-key destruction is recorded here first, for replay after a restore.
    secrets_shred_ledger: str | None = None

    @model_validator(mode="after")
    def _approle_needs_credentials(self) -> Self:
        missing = self.vault_role_id is None or self.vault_secret_id is None
        if self.vault_auth == "approle" and missing:
            raise ValueError(
                "DOORWARD_VAULT_ROLE_ID and DOORWARD_VAULT_SECRET_ID are required with "
                "DOORWARD_VAULT_AUTH=approle"
            )
        return self

    @property
    def db_url(self) -> str:
        return self.secrets_db_url.get_secret_value()
