"""Work orders' settings (environment, prefix DOORWARD_). Nothing secret has a default.

DOORWARD_WORKORDERS_DB_URL                  postgresql+asyncpg://... (required)
DOORWARD_WORKORDERS_DATA_KEY_CACHE_SECONDS  how long a customer's plaintext data key stays in
                                            memory (default 60; 0 disables the cache)
DOORWARD_WORKORDERS_DATA_KEY_CACHE_SIZE     at most this many cached data keys (default 1000)
DOORWARD_WORKORDERS_OUTBOX_POLL_SECONDS     RevokeGrants outbox poll interval (default 1)
DOORWARD_WORKORDERS_PURGE_INTERVAL_SECONDS  how often the retention purge runs (default 3600)
DOORWARD_WORKORDERS_PURGE_BATCH             rows per purge transaction (default 500)
DOORWARD_WORKORDERS_CONTACT_V1_UPGRADE      accept contact ciphertexts of the old v1 format (bound
                                            to the customer only) and seal each again as v2 when
                                            read; default false: v1 is refused (see crypto.py)
DOORWARD_WORKORDERS_TRACE_STORE             the embedded trace store runs (default true; `doorward
                                            up` sets false with an external OTLP collector): the
                                            purge hands it each organisation's traceDays, else
                                            the policy says the operator's backend keeps traces
Ports and the identity/secrets/audit/traces targets come from StackSettings.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkOrdersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOORWARD_", extra="forbid", frozen=True)

    workorders_db_url: SecretStr
    workorders_data_key_cache_seconds: float = Field(default=60.0, ge=0, le=600)
    workorders_data_key_cache_size: int = Field(default=1000, ge=1)
    workorders_outbox_poll_seconds: float = Field(default=1.0, gt=0)
    # The retention purge (services/workorders/purge.py): one run per interval across replicas.
    workorders_purge_interval_seconds: float = Field(default=3600.0, ge=1)
    workorders_purge_batch: int = Field(default=500, ge=1, le=10_000)
    # One-off upgrade of data written before contact ciphertexts were bound to field and site.
    # Outside the database on purpose: a database writer cannot turn it back on.
    workorders_contact_v1_upgrade: bool = False
    # Whether traces go to the embedded trace store (which the purge tells each organisation's
    # traceDays) or to an external collector (whose retention is the operator's to set).
    workorders_trace_store: bool = True

    @property
    def db_url(self) -> str:
        return self.workorders_db_url.get_secret_value()
