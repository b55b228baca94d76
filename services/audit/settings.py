"""Audit's settings (environment, prefix DOORWARD_). Nothing secret has a default.

DOORWARD_AUDIT_DB_URL                 postgresql+asyncpg://... (required)
DOORWARD_AUDIT_SIGNING_KEY_FILE       Ed25519 private key PEM that signs checkpoints (generated,
                                      0600, when missing and DOORWARD_ENV=development)
DOORWARD_AUDIT_CHECKPOINT_INTERVAL    seconds between signed checkpoints, default 60
DOORWARD_AUDIT_ALERT_*                thresholds of the security alert rules (see below)
DOORWARD_AUDIT_TRACE_STORE            whether the embedded trace store runs (traces in the graph
                                      read it); `doorward up` sets 0 with an external collector
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.audit.alerts import AlertRules


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOORWARD_", extra="forbid", frozen=True)

    audit_db_url: SecretStr
    audit_signing_key_file: Path = Path(".doorward/audit/audit-signing-key.pem")
    audit_checkpoint_interval: float = Field(default=60.0, gt=0)
    # The whole chain of every organisation is re-verified this often (seconds): the checkpoint
    # job checks only what came after its last signature.
    audit_full_verify_interval: float = Field(default=3600.0, gt=0)
    # Many reveals by one user: at least `reveals` within `reveal_window` seconds.
    audit_alert_reveals: int = Field(default=20, ge=1)
    audit_alert_reveal_window: int = Field(default=3600, ge=1)
    # Repeated denied attempts by one user: at least `denials` within `denial_window` seconds.
    audit_alert_denials: int = Field(default=5, ge=1)
    audit_alert_denial_window: int = Field(default=900, ge=1)
    # The graph's traces come from the embedded trace store (doorward.traces.v1) when it runs.
    audit_trace_store: bool = True

    @property
    def db_url(self) -> str:
        return self.audit_db_url.get_secret_value()

    def alert_rules(self) -> AlertRules:
        return AlertRules(
            reveals=self.audit_alert_reveals,
            reveal_window=self.audit_alert_reveal_window,
            denials=self.audit_alert_denials,
            denial_window=self.audit_alert_denial_window,
        )
