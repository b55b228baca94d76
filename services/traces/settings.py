"""The trace store's settings (environment, prefix DOORWARD_). Nothing secret has a default.

DOORWARD_TRACES_DB_URL              postgresql+asyncpg://... (required; set by `doorward up`)
DOORWARD_TRACES_RETENTION_DAYS      spans, traces and metric points older than this are deleted
DOORWARD_TRACES_PRUNE_SECONDS       how often the retention job runs
DOORWARD_TRACES_MAX_BODY_BYTES      largest OTLP request body accepted (after decompression)
DOORWARD_TRACES_RECEIVER_TLS        mutual TLS on the OTLP receiver (with DOORWARD_TLS_DIR)
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TracesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOORWARD_", extra="forbid", frozen=True)

    traces_db_url: SecretStr
    traces_retention_days: float = Field(default=14.0, gt=0, le=3650)
    traces_prune_seconds: float = Field(default=3600.0, gt=0)
    traces_max_body_bytes: int = Field(default=8_000_000, ge=1024)
    # With a certificate folder (DOORWARD_TLS_DIR), the receiver speaks HTTPS and takes spans
    # only from clients with a Doorward service certificate: nobody else can plant a span.
    traces_receiver_tls: bool = True

    @property
    def db_url(self) -> str:
        return self.traces_db_url.get_secret_value()
