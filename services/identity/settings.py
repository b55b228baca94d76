"""Identity's settings (environment, prefix DOORWARD_). Nothing secret has a default.

DOORWARD_IDENTITY_DB_URL               postgresql+asyncpg://... (required)
DOORWARD_IDENTITY_KEY_DIR              signing keys + the data key (0600, generated if missing);
                                       default DOORWARD_DATA_DIR/credentials/identity/keys
                                       (as `make up`)
DOORWARD_IDENTITY_ACCESS_TOKEN_TTL     seconds, default 600, at most 600
DOORWARD_IDENTITY_REFRESH_TOKEN_TTL    seconds, default 43200 (a working day)
DOORWARD_IDENTITY_SIGNING_KEY_MAX_AGE  seconds before the signing key is rotated (default 1 day)
DOORWARD_IDENTITY_ARGON2_TIME_COST / _MEMORY_COST (KiB) / _PARALLELISM   RFC 9106 low-memory
DOORWARD_IDENTITY_LOGIN_* throttling   see the fields below
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from doorward_kit.auth import MAX_TOKEN_LIFETIME_SECONDS


class IdentitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOORWARD_", extra="forbid", frozen=True)

    identity_db_url: SecretStr
    identity_key_dir: Path | None = None
    # The stack's data folder; only used to find the key folder when it is not set.
    data_dir: Path = Path(".doorward")
    identity_access_token_ttl: int = Field(default=600, ge=30, le=MAX_TOKEN_LIFETIME_SECONDS)
    identity_refresh_token_ttl: int = Field(default=43_200, ge=60)
    identity_signing_key_max_age: int = Field(default=86_400, ge=60)
    # argon2id cost: the defaults are argon2-cffi's RFC 9106 low-memory profile; tests lower them.
    identity_argon2_time_cost: int = Field(default=3, ge=1)
    identity_argon2_memory_cost: int = Field(default=65_536, ge=8)
    identity_argon2_parallelism: int = Field(default=4, ge=1)
    # Failed logins: after `free` failures a key (account or source address) is blocked for
    # base * 2^(failures - free) seconds, capped; counters forget after `window` quiet seconds.
    identity_login_free_failures_account: int = Field(default=5, ge=1)
    identity_login_free_failures_address: int = Field(default=30, ge=1)
    identity_login_block_base_seconds: float = Field(default=2.0, ge=0)
    identity_login_block_max_seconds: float = Field(default=900.0, ge=0)
    identity_login_failure_window_seconds: float = Field(default=3600.0, ge=1)
    # How long deactivateUser/logout wait for connected watchers to ack a session event.
    identity_watch_ack_timeout: float = Field(default=2.0, gt=0)
    # Secrets RevokeGrants outbox: retry backoff bounds, seconds.
    identity_outbox_poll_seconds: float = Field(default=1.0, gt=0)

    @property
    def key_dir(self) -> Path:
        # Same place as `doorward up` puts it, so `doorward bootstrap` seals TOTP secrets with
        # the key the running service opens them with.
        return self.identity_key_dir or self.data_dir / "credentials" / "identity" / "keys"

    @property
    def db_url(self) -> str:
        return self.identity_db_url.get_secret_value()
